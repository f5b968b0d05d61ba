//! The OpenAPI 3.1 document, built from [`registry`](super::registry) and
//! [`objects`](super::objects) with utoipa's types (so its structure is checked by the
//! compiler, not by hand-written JSON).

use std::collections::BTreeMap;

use serde_json::json;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, ParameterStyle,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, SchemaType};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathItem,
    PathsBuilder, Ref, RefOr, Required, ResponseBuilder, ResponsesBuilder, Schema, SchemaFormat,
    SecurityRequirement, Server, Type,
};

use super::objects::{self, FieldType};
use super::registry::{Endpoint, Kind, Method, Param, Returns, ENDPOINTS, RESOURCES};

/// The name of the error envelope's component schema.
pub const ERROR_SCHEMA: &str = "error";
/// The name of the deleted-object component schema.
pub const DELETED_SCHEMA: &str = "deleted_object";

const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";

/// The document, as served at `/openapi.json`.
pub fn document() -> OpenApi {
    let mut paths: BTreeMap<&str, Vec<&Endpoint>> = BTreeMap::new();
    for endpoint in ENDPOINTS {
        paths.entry(endpoint.path).or_default().push(endpoint);
    }
    let mut builder = PathsBuilder::new();
    for (path, endpoints) in paths {
        let mut item: Option<PathItem> = None;
        for endpoint in endpoints {
            let method = match endpoint.method {
                Method::Get => HttpMethod::Get,
                Method::Post => HttpMethod::Post,
                Method::Delete => HttpMethod::Delete,
            };
            let operation = operation(endpoint);
            match &mut item {
                None => item = Some(PathItem::new(method, operation)),
                Some(existing) => existing.merge_operations(PathItem::new(method, operation)),
            }
        }
        if let Some(item) = item {
            builder = builder.path(path, item);
        }
    }
    let tags = RESOURCES.iter().map(|(name, description)| {
        utoipa::openapi::tag::TagBuilder::new()
            .name(*name)
            .description(Some(*description))
            .build()
    });
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Calmony Pay API")
                .version("2026-10-28.endive")
                .description(Some(
                    "A Stripe-shaped payments API: form-encoded requests, JSON answers, \
                     Stripe's error envelope, lists and idempotency keys. The official \
                     Stripe SDKs work by changing the base URL. Guides: /docs.",
                )),
        )
        .servers(Some([Server::new("/")]))
        .paths(builder)
        .components(Some(components()))
        .security(Some([
            SecurityRequirement::new("basicAuth", Vec::<String>::new()),
            SecurityRequirement::new("bearerAuth", Vec::<String>::new()),
        ]))
        .tags(Some(tags))
        .build()
}

/// The document as JSON text.
pub fn json() -> String {
    document()
        .to_pretty_json()
        .unwrap_or_else(|error| json!({"error": error.to_string()}).to_string())
}

fn operation(endpoint: &Endpoint) -> utoipa::openapi::path::Operation {
    let mut operation = OperationBuilder::new()
        .tag(endpoint.resource)
        .summary(Some(endpoint.summary))
        .operation_id(Some(endpoint.operation_id()));
    let mut description = endpoint.description.to_owned();
    if !description.is_empty() {
        description.push_str("\n\n");
    }
    description.push_str("```sh\n");
    description.push_str(&endpoint.curl());
    description.push_str("\n```");
    operation = operation.description(Some(description));
    for name in endpoint.path_params() {
        operation = operation.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("The object's id."))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
        );
    }
    let params = endpoint.all_params();
    if endpoint.method == Method::Post {
        let mut body = ObjectBuilder::new().schema_type(Type::Object);
        for param in &params {
            body = body.property(param.name, param_schema(param));
            if param.required {
                body = body.required(param.name);
            }
        }
        let required = params.iter().any(|param| param.required);
        operation = operation.request_body(Some(
            RequestBodyBuilder::new()
                .content(FORM, ContentBuilder::new().schema(Some(body)).build())
                .required(Some(if required {
                    Required::True
                } else {
                    Required::False
                }))
                .build(),
        ));
    } else {
        for param in &params {
            let deep =
                matches!(param.kind, Kind::StringList | Kind::Metadata) || param.name.contains('[');
            let mut parameter = ParameterBuilder::new()
                .name(param.name)
                .parameter_in(ParameterIn::Query)
                .required(if param.required {
                    Required::True
                } else {
                    Required::False
                })
                .description(Some(param.description))
                .schema(Some(param_schema(param)));
            if deep {
                parameter = parameter
                    .style(Some(ParameterStyle::DeepObject))
                    .explode(Some(true));
            }
            operation = operation.parameter(parameter);
        }
    }
    if endpoint.is_write() {
        operation = operation.parameter(
            ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Makes a retry safe: the first answer is stored for 24 hours and replayed \
                     (with `Idempotent-Replayed: true`).",
                ))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
        );
    }
    let mut responses = ResponsesBuilder::new().response(
        "200",
        ResponseBuilder::new()
            .description(match endpoint.returns {
                Returns::Object(object) => format!("The {object}."),
                Returns::List(object) => format!("A list of {object} objects."),
                Returns::Deleted(object) => format!("The {object}, deleted."),
            })
            .content(
                JSON,
                ContentBuilder::new()
                    .schema(Some(returns_schema(endpoint.returns)))
                    .build(),
            ),
    );
    let mut by_status: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for error in endpoint.errors() {
        let code = error
            .code
            .map(|code| format!(" `{code}`"))
            .unwrap_or_default();
        by_status
            .entry(error.status)
            .or_default()
            .push(format!("`{}`{code}: {}", error.error_type, error.when));
    }
    for (status, lines) in by_status {
        responses = responses.response(
            status.to_string(),
            ResponseBuilder::new()
                .description(lines.join("\n\n"))
                .content(
                    JSON,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(ERROR_SCHEMA)))
                        .build(),
                ),
        );
    }
    operation.responses(responses).build()
}

fn param_schema(param: &Param) -> RefOr<Schema> {
    let description = Some(param.description);
    match param.kind {
        Kind::String => ObjectBuilder::new()
            .schema_type(Type::String)
            .description(description)
            .into(),
        Kind::Integer => ObjectBuilder::new()
            .schema_type(Type::Integer)
            .description(description)
            .into(),
        Kind::Boolean => ObjectBuilder::new()
            .schema_type(Type::Boolean)
            .description(description)
            .into(),
        Kind::Timestamp => ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::Custom("unix-time".into())))
            .description(description)
            .into(),
        Kind::Enum(values) => ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(values.iter().copied()))
            .description(description)
            .into(),
        Kind::StringList => ArrayBuilder::new()
            .items(ObjectBuilder::new().schema_type(Type::String))
            .description(description)
            .into(),
        Kind::Metadata => metadata_schema().description(description).into(),
    }
}

fn metadata_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(ObjectBuilder::new().schema_type(Type::String)))
}

/// A component's name for an object type (`test_helpers.test_clock` stays as it is:
/// OpenAPI allows dots in component names).
fn schema_ref(object: &str) -> Ref {
    Ref::from_schema_name(object)
}

fn list_schema(object: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .title(Some(format!("{object} list")))
        .property(
            "object",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["list"])),
        )
        .required("object")
        .property("data", ArrayBuilder::new().items(schema_ref(object)))
        .required("data")
        .property("has_more", ObjectBuilder::new().schema_type(Type::Boolean))
        .required("has_more")
        .property(
            "url",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("The list's path; the SDKs page by appending to it.")),
        )
        .required("url")
}

fn returns_schema(returns: Returns) -> RefOr<Schema> {
    match returns {
        Returns::Object(object) => schema_ref(object).into(),
        Returns::List(object) => list_schema(object).into(),
        Returns::Deleted(_) => Ref::from_schema_name(DELETED_SCHEMA).into(),
    }
}

fn field_schema(field: &objects::Field) -> RefOr<Schema> {
    let simple = |kind: Type| -> SchemaType {
        if field.nullable {
            SchemaType::from_iter([kind, Type::Null])
        } else {
            SchemaType::new(kind)
        }
    };
    match &field.field_type {
        FieldType::String => ObjectBuilder::new()
            .schema_type(simple(Type::String))
            .into(),
        FieldType::Integer => ObjectBuilder::new()
            .schema_type(simple(Type::Integer))
            .into(),
        FieldType::Boolean => ObjectBuilder::new()
            .schema_type(simple(Type::Boolean))
            .into(),
        FieldType::Timestamp => ObjectBuilder::new()
            .schema_type(simple(Type::Integer))
            .format(Some(SchemaFormat::Custom("unix-time".into())))
            .into(),
        FieldType::Object => ObjectBuilder::new()
            .schema_type(simple(Type::Object))
            .into(),
        FieldType::Array => ArrayBuilder::new()
            .schema_type(simple(Type::Array))
            .items(ObjectBuilder::new().schema_type(SchemaType::AnyValue))
            .into(),
        FieldType::Metadata => metadata_schema().into(),
        FieldType::Any => ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .into(),
        FieldType::Constant(value) => ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some([*value]))
            .into(),
        FieldType::Expandable(object) => {
            let mut one_of = OneOfBuilder::new()
                .item(ObjectBuilder::new().schema_type(Type::String))
                .item(schema_ref(object));
            if field.nullable {
                one_of = one_of.item(ObjectBuilder::new().schema_type(Type::Null));
            }
            one_of
                .description(Some(format!(
                    "The {object}'s id, or the {object} with `expand[]`."
                )))
                .into()
        }
        FieldType::List(object) => list_schema(object).into(),
    }
}

fn components() -> utoipa::openapi::Components {
    let mut components = ComponentsBuilder::new();
    for (name, description, spec) in objects::OBJECTS {
        let mut schema = ObjectBuilder::new()
            .schema_type(Type::Object)
            .title(Some(*name))
            .description(Some(*description));
        for field in objects::fields(spec) {
            schema = schema.property(field.name, field_schema(&field));
            schema = schema.required(field.name);
        }
        components = components.schema(*name, schema);
    }
    components = components.schema(
        DELETED_SCHEMA,
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .title(Some("deleted object"))
            .property("id", ObjectBuilder::new().schema_type(Type::String))
            .required("id")
            .property("object", ObjectBuilder::new().schema_type(Type::String))
            .required("object")
            .property(
                "deleted",
                ObjectBuilder::new()
                    .schema_type(Type::Boolean)
                    .enum_values(Some([true])),
            )
            .required("deleted"),
    );
    let text = || ObjectBuilder::new().schema_type(Type::String);
    let error_object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "type",
            text().enum_values(Some([
                "api_error",
                "card_error",
                "idempotency_error",
                "invalid_request_error",
            ])),
        )
        .required("type")
        .property("message", text())
        .required("message")
        .property("code", text())
        .property("decline_code", text())
        .property("advice_code", text())
        .property("param", text())
        .property("doc_url", text())
        .property("charge", text())
        .property("payment_intent", schema_ref("payment_intent"))
        .property("payment_method", schema_ref("payment_method"));
    components = components.schema(
        ERROR_SCHEMA,
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .title(Some("error"))
            .description(Some(
                "Stripe's error envelope; the HTTP status says which kind.",
            ))
            .property("error", error_object)
            .required("error"),
    );
    components
        .security_scheme(
            "basicAuth",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some("The secret key as the user name, no password."))
                    .build(),
            ),
        )
        .security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer sk_test_…` (what the SDKs send).",
                    ))
                    .build(),
            ),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    fn refs(value: &Value, found: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    found.insert(target.clone());
                }
                map.values().for_each(|value| refs(value, found));
            }
            Value::Array(items) => items.iter().for_each(|value| refs(value, found)),
            _ => {}
        }
    }

    /// The structural checks a validator would make that the types alone do not: every
    /// registered endpoint is there, every `$ref` resolves, every `{param}` of a path is
    /// declared, operation ids are unique.
    #[test]
    fn the_document_is_openapi_3_1_with_every_endpoint_and_resolving_refs() {
        let document: Value = serde_json::from_str(&json()).expect("valid JSON");
        assert_eq!(document["openapi"], "3.1.0");
        let paths = document["paths"].as_object().expect("paths");
        let mut operation_ids = BTreeSet::new();
        for endpoint in ENDPOINTS {
            let operation = &paths[endpoint.path][endpoint.method.as_str().to_lowercase()];
            assert!(
                operation.is_object(),
                "{} {}",
                endpoint.method.as_str(),
                endpoint.path
            );
            assert!(operation_ids.insert(operation["operationId"].to_string()));
            let declared: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|parameter| parameter["in"] == "path")
                .filter_map(|parameter| parameter["name"].as_str())
                .collect();
            let wanted: BTreeSet<&str> = endpoint.path_params().into_iter().collect();
            assert_eq!(declared, wanted, "{}", endpoint.path);
            assert!(operation["responses"]["200"].is_object());
            assert!(operation["responses"]["401"].is_object());
        }
        let schemas = document["components"]["schemas"]
            .as_object()
            .expect("schemas");
        let mut found = BTreeSet::new();
        refs(&document, &mut found);
        for target in found {
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected $ref {target}"));
            assert!(schemas.contains_key(name), "$ref {target} does not resolve");
        }
        for object in [
            "customer",
            "payment_method",
            "payment_intent",
            "refund",
            "charge",
            "event",
            "webhook_endpoint",
            "product",
            "price",
            "tax_rate",
            "subscription",
            "invoice",
            "invoiceitem",
            "test_helpers.test_clock",
            "checkout.session",
            ERROR_SCHEMA,
        ] {
            assert!(schemas.contains_key(object), "{object}");
        }
        let schemes = &document["components"]["securitySchemes"];
        assert_eq!(schemes["basicAuth"]["scheme"], "basic");
        assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    }
}
