//! The billing catalog end to end: products, prices and tax rates through the real server
//! process on a fresh database, driven over HTTP as the Stripe SDKs drive it, and a
//! project's billing settings through the `calmony projects` CLI.

use calmony_tests::{run, stderr_of, stdout_of, Server};
use event_store::test_harness::TestDatabase;
use reqwest::StatusCode;
use serde_json::Value;

struct Api {
    client: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .form(form)
            .send()
            .await
            .expect("POST");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("GET");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .delete(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("DELETE");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The ids of a list answer, sorted: objects created within one second have no order
    /// a test could rely on (ties are broken by id).
    async fn list_ids(&self, path: &str) -> Vec<String> {
        let (status, list) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {list}");
        assert_eq!(list["object"], "list", "{list}");
        list["data"]
            .as_array()
            .unwrap_or_else(|| panic!("no data in {list}"))
            .iter()
            .map(id)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}

/// `ids`, sorted as [`Api::list_ids`] returns them.
fn sorted(ids: &[String]) -> Vec<String> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids
}

/// A new project with a test key: (project id, secret key).
fn new_project(database_url: &str, name: &str) -> (String, String) {
    let output = run(database_url, &["projects", "create", "--name", name]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let project = stdout_of(&output).trim().to_string();
    let output = run(
        database_url,
        &["keys", "create", "--project", &project, "--mode", "test"],
    );
    assert!(output.status.success(), "{}", stderr_of(&output));
    (project, stdout_of(&output).trim().to_string())
}

/// The server, with a rate limit these scripted bursts of requests stay under.
fn start_server(database_url: &str) -> Server {
    Server::start(database_url, &[("CALMONY_RATE_LIMIT_TEST", "1000")])
}

fn api(server: &Server, key: &str) -> Api {
    Api {
        client: reqwest::Client::new(),
        base: server.base_url.clone(),
        key: key.to_string(),
    }
}

fn id(value: &Value) -> String {
    value["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {value}"))
        .to_string()
}

/// A 400 `invalid_request_error` about `param`.
fn assert_param_error(status: StatusCode, body: &Value, param: &str) {
    assert_eq!(status, 400, "{param}: {body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(body["error"]["param"], param, "{body}");
}

#[tokio::test]
async fn products_are_created_updated_listed_and_deleted_only_while_they_have_no_prices() {
    let db = TestDatabase::new().await;
    let (_, key) = new_project(&db.url, "Catalog");
    let server = start_server(&db.url);
    let api = api(&server, &key);

    let (status, gold) = api
        .post(
            "/v1/products",
            &[
                ("name", "Gold plan"),
                ("description", "Everything"),
                ("unit_label", "seat"),
                ("metadata[tier]", "gold"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{gold}");
    assert!(id(&gold).starts_with("prod_"));
    assert_eq!(gold["object"], "product");
    assert_eq!(gold["name"], "Gold plan");
    assert_eq!(gold["active"], true);
    assert_eq!(gold["unit_label"], "seat");
    assert_eq!(gold["metadata"]["tier"], "gold");
    assert_eq!(gold["default_price"], Value::Null);
    assert_eq!(gold["livemode"], false);
    assert_eq!(gold["updated"], gold["created"]);
    for field in ["images", "marketing_features"] {
        assert_eq!(gold[field], Value::Array(vec![]), "{field}");
    }
    let (status, read) = api.get(&format!("/v1/products/{}", id(&gold))).await;
    assert_eq!(status, 200);
    assert_eq!(read, gold, "a POST's answer and a later GET agree");

    let (status, missing_name) = api.post("/v1/products", &[("description", "x")]).await;
    assert_param_error(status, &missing_name, "name");

    let (_, silver) = api.post("/v1/products", &[("name", "Silver")]).await;
    let (status, archived) = api
        .post(
            &format!("/v1/products/{}", id(&silver)),
            &[("active", "false"), ("description", "Retired")],
        )
        .await;
    assert_eq!(status, 200, "{archived}");
    assert_eq!(archived["active"], false);
    assert_eq!(archived["description"], "Retired");
    let (_, still) = api
        .post(
            &format!("/v1/products/{}", id(&silver)),
            &[("description", "")],
        )
        .await;
    assert_eq!(still["active"], false, "archived until reactivated");
    assert_eq!(still["description"], Value::Null, "empty unsets");

    assert_eq!(
        api.list_ids("/v1/products").await,
        sorted(&[id(&silver), id(&gold)])
    );
    assert_eq!(api.list_ids("/v1/products?active=true").await, [id(&gold)]);
    assert_eq!(
        api.list_ids("/v1/products?active=false").await,
        [id(&silver)]
    );
    assert_eq!(
        api.list_ids(&format!("/v1/products?ids[]={}", id(&gold)))
            .await,
        [id(&gold)]
    );
    assert_eq!(
        api.list_ids(&format!(
            "/v1/products?ids[0]={}&ids[1]={}",
            id(&gold),
            id(&silver)
        ))
        .await
        .len(),
        2
    );

    // No prices yet: deletion works, and the product is gone for reads.
    let (status, deleted) = api.delete(&format!("/v1/products/{}", id(&silver))).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(
        deleted,
        serde_json::json!({"id": id(&silver), "object": "product", "deleted": true})
    );
    let (status, gone) = api.get(&format!("/v1/products/{}", id(&silver))).await;
    assert_eq!(status, 404, "{gone}");
    assert_eq!(gone["error"]["code"], "resource_missing");
    assert_eq!(api.list_ids("/v1/products").await, [id(&gold)]);
    let (status, _) = api
        .post(
            &format!("/v1/products/{}", id(&silver)),
            &[("name", "Back")],
        )
        .await;
    assert_eq!(status, 404);
    let (status, on_deleted) = api
        .post(
            "/v1/prices",
            &[
                ("product", &id(&silver)),
                ("currency", "gbp"),
                ("unit_amount", "100"),
            ],
        )
        .await;
    assert_param_error(status, &on_deleted, "product");

    // With a price: deletion is refused, as at Stripe.
    let (status, price) = api
        .post(
            "/v1/prices",
            &[
                ("product", &id(&gold)),
                ("currency", "gbp"),
                ("unit_amount", "1500"),
                ("recurring[interval]", "month"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{price}");
    let (status, refused) = api.delete(&format!("/v1/products/{}", id(&gold))).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["type"], "invalid_request_error");
    assert_eq!(
        refused["error"]["message"],
        "This product cannot be deleted because it has one or more prices."
    );

    // A default price: one of its own active prices, expandable; it cannot be archived.
    let (status, with_default) = api
        .post(
            &format!("/v1/products/{}?expand[]=default_price", id(&gold)),
            &[("default_price", &id(&price))],
        )
        .await;
    assert_eq!(status, 200, "{with_default}");
    assert_eq!(with_default["default_price"]["id"], id(&price));
    assert_eq!(with_default["default_price"]["object"], "price");
    let (status, archive_default) = api
        .post(
            &format!("/v1/prices/{}", id(&price)),
            &[("active", "false")],
        )
        .await;
    assert_param_error(status, &archive_default, "active");
    let (status, unknown_price) = api
        .post(
            &format!("/v1/products/{}", id(&gold)),
            &[("default_price", "price_nope")],
        )
        .await;
    assert_param_error(status, &unknown_price, "default_price");
    assert_eq!(unknown_price["error"]["code"], "resource_missing");
}

#[tokio::test]
async fn prices_validate_naming_the_param_and_are_archived_not_deleted() {
    let db = TestDatabase::new().await;
    let (_, key) = new_project(&db.url, "Prices");
    let server = start_server(&db.url);
    let api = api(&server, &key);
    let (_, product) = api.post("/v1/products", &[("name", "Pro")]).await;
    let product_id = id(&product);

    let (status, monthly) = api
        .post(
            "/v1/prices",
            &[
                ("product", &product_id),
                ("currency", "GBP"),
                ("unit_amount", "1500"),
                ("recurring[interval]", "month"),
                ("recurring[interval_count]", "3"),
                ("lookup_key", "pro_quarterly"),
                ("nickname", "Quarterly"),
                ("metadata[plan]", "pro"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{monthly}");
    assert!(id(&monthly).starts_with("price_"));
    assert_eq!(monthly["object"], "price");
    assert_eq!(monthly["product"], product_id);
    assert_eq!(monthly["currency"], "gbp");
    assert_eq!(monthly["unit_amount"], 1500);
    assert_eq!(monthly["unit_amount_decimal"], "1500");
    assert_eq!(monthly["billing_scheme"], "per_unit");
    assert_eq!(monthly["type"], "recurring");
    assert_eq!(monthly["tax_behavior"], "unspecified");
    assert_eq!(monthly["active"], true);
    assert_eq!(
        monthly["recurring"],
        serde_json::json!({"interval": "month", "interval_count": 3, "meter": null,
                           "trial_period_days": null, "usage_type": "licensed"})
    );
    assert_eq!(monthly["lookup_key"], "pro_quarterly");

    // product_data creates the product in the same request.
    let (status, one_time) = api
        .post(
            "/v1/prices?expand[]=product",
            &[
                ("product_data[name]", "Setup fee"),
                ("product_data[unit_label]", "site"),
                ("currency", "eur"),
                ("unit_amount", "0"),
                ("tax_behavior", "exclusive"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{one_time}");
    assert_eq!(one_time["type"], "one_time");
    assert_eq!(one_time["recurring"], Value::Null);
    assert_eq!(one_time["unit_amount"], 0, "zero is a price (free)");
    assert_eq!(one_time["product"]["object"], "product");
    assert_eq!(one_time["product"]["name"], "Setup fee");
    let setup_product = id(&one_time["product"]);
    let (status, _) = api.get(&format!("/v1/products/{setup_product}")).await;
    assert_eq!(status, 200);

    // Validation names the parameter.
    let base = [("product", product_id.as_str()), ("currency", "gbp")];
    for (extra, param) in [
        (vec![("unit_amount", "-1")], "unit_amount"),
        (vec![("unit_amount", "many")], "unit_amount"),
        (vec![], "unit_amount"),
        (
            vec![("unit_amount", "100"), ("recurring[interval]", "fortnight")],
            "recurring[interval]",
        ),
        (
            vec![("unit_amount", "100"), ("recurring[interval_count]", "2")],
            "recurring[interval]",
        ),
        (
            vec![
                ("unit_amount", "100"),
                ("recurring[interval]", "month"),
                ("recurring[interval_count]", "13"),
            ],
            "recurring[interval_count]",
        ),
        (
            vec![
                ("unit_amount", "100"),
                ("recurring[interval]", "week"),
                ("recurring[interval_count]", "0"),
            ],
            "recurring[interval_count]",
        ),
        (
            vec![("unit_amount", "100"), ("tax_behavior", "sometimes")],
            "tax_behavior",
        ),
        (
            vec![("unit_amount", "100"), ("tiers_mode", "volume")],
            "tiers_mode",
        ),
    ] {
        let mut form = base.to_vec();
        form.extend(extra);
        let (status, body) = api.post("/v1/prices", &form).await;
        assert_param_error(status, &body, param);
    }
    for (form, param) in [
        (
            vec![("product", product_id.as_str()), ("unit_amount", "100")],
            "currency",
        ),
        (
            vec![
                ("product", product_id.as_str()),
                ("unit_amount", "100"),
                ("currency", "xyz"),
            ],
            "currency",
        ),
        (vec![("currency", "gbp"), ("unit_amount", "100")], "product"),
        (
            vec![
                ("product", "prod_nope"),
                ("currency", "gbp"),
                ("unit_amount", "100"),
            ],
            "product",
        ),
    ] {
        let (status, body) = api.post("/v1/prices", &form).await;
        assert_param_error(status, &body, param);
    }

    // Amount, currency and interval never change; bookkeeping fields do.
    let (status, immutable) = api
        .post(
            &format!("/v1/prices/{}", id(&monthly)),
            &[("unit_amount", "2000")],
        )
        .await;
    assert_param_error(status, &immutable, "unit_amount");
    assert_eq!(immutable["error"]["code"], "parameter_unknown");
    let (status, taxed) = api
        .post(
            &format!("/v1/prices/{}", id(&monthly)),
            &[("tax_behavior", "inclusive"), ("nickname", "Quarterly pro")],
        )
        .await;
    assert_eq!(status, 200, "{taxed}");
    assert_eq!(taxed["tax_behavior"], "inclusive");
    let (status, fixed) = api
        .post(
            &format!("/v1/prices/{}", id(&monthly)),
            &[("tax_behavior", "exclusive")],
        )
        .await;
    assert_param_error(status, &fixed, "tax_behavior");

    // Archived, never deleted.
    let (status, archived) = api
        .post(
            &format!("/v1/prices/{}", id(&monthly)),
            &[("active", "false")],
        )
        .await;
    assert_eq!(status, 200, "{archived}");
    assert_eq!(archived["active"], false);
    let (_, read) = api.get(&format!("/v1/prices/{}", id(&monthly))).await;
    assert_eq!(read["active"], false);
    assert_eq!(read["unit_amount"], 1500);
    let (status, _) = api.delete(&format!("/v1/prices/{}", id(&monthly))).await;
    assert!(status.is_client_error(), "prices have no DELETE: {status}");

    // Lookup keys are unique; transfer_lookup_key moves one.
    let (status, duplicate) = api
        .post(
            "/v1/prices",
            &[
                ("product", &product_id),
                ("currency", "gbp"),
                ("unit_amount", "5000"),
                ("recurring[interval]", "year"),
                ("lookup_key", "pro_quarterly"),
            ],
        )
        .await;
    assert_param_error(status, &duplicate, "lookup_key");
    let (status, yearly) = api
        .post(
            "/v1/prices",
            &[
                ("product", &product_id),
                ("currency", "gbp"),
                ("unit_amount", "5000"),
                ("recurring[interval]", "year"),
                ("lookup_key", "pro_quarterly"),
                ("transfer_lookup_key", "true"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{yearly}");
    let (_, old) = api.get(&format!("/v1/prices/{}", id(&monthly))).await;
    assert_eq!(old["lookup_key"], Value::Null, "the key moved");

    // List filters.
    assert_eq!(
        api.list_ids("/v1/prices").await,
        sorted(&[id(&yearly), id(&one_time), id(&monthly)])
    );
    assert_eq!(
        api.list_ids(&format!("/v1/prices?product={product_id}"))
            .await,
        sorted(&[id(&yearly), id(&monthly)])
    );
    assert_eq!(
        api.list_ids("/v1/prices?type=one_time").await,
        [id(&one_time)]
    );
    assert_eq!(
        api.list_ids("/v1/prices?currency=eur").await,
        [id(&one_time)]
    );
    assert_eq!(
        api.list_ids("/v1/prices?active=false").await,
        [id(&monthly)]
    );
    assert_eq!(
        api.list_ids("/v1/prices?recurring[interval]=year").await,
        [id(&yearly)]
    );
    assert_eq!(
        api.list_ids("/v1/prices?lookup_keys[]=pro_quarterly&lookup_keys[]=other")
            .await,
        [id(&yearly)]
    );
    assert_eq!(
        api.list_ids(&format!(
            "/v1/prices?product={product_id}&active=true&type=recurring&currency=gbp"
        ))
        .await,
        [id(&yearly)]
    );
    let (_, expanded) = api
        .get("/v1/prices?type=one_time&expand[]=data.product")
        .await;
    assert_eq!(expanded["data"][0]["product"]["id"], setup_product);
    let (status, bad_filter) = api.get("/v1/prices?recurring[interval]=hour").await;
    assert_param_error(status, &bad_filter, "recurring[interval]");
}

#[tokio::test]
async fn tax_rates_keep_their_percentage_for_life() {
    let db = TestDatabase::new().await;
    let (_, key) = new_project(&db.url, "Taxes");
    let server = start_server(&db.url);
    let api = api(&server, &key);

    let (status, vat) = api
        .post(
            "/v1/tax_rates",
            &[
                ("display_name", "VAT"),
                ("percentage", "20.0"),
                ("inclusive", "false"),
                ("country", "gb"),
                ("jurisdiction", "UK"),
                ("tax_type", "vat"),
                ("description", "UK standard rate"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{vat}");
    assert!(id(&vat).starts_with("txr_"));
    assert_eq!(vat["object"], "tax_rate");
    assert_eq!(vat["percentage"], 20.0);
    assert_eq!(vat["effective_percentage"], 20.0);
    assert_eq!(vat["inclusive"], false);
    assert_eq!(vat["active"], true);
    assert_eq!(vat["country"], "GB");
    assert_eq!(vat["tax_type"], "vat");
    assert_eq!(vat["rate_type"], "percentage");
    let (status, read) = api.get(&format!("/v1/tax_rates/{}", id(&vat))).await;
    assert_eq!(status, 200);
    assert_eq!(read, vat);

    let (_, reduced) = api
        .post(
            "/v1/tax_rates",
            &[
                ("display_name", "Reduced VAT"),
                ("percentage", "17.5"),
                ("inclusive", "true"),
            ],
        )
        .await;
    assert_eq!(reduced["percentage"], 17.5);

    for (form, param) in [
        (
            vec![
                ("display_name", "Too much"),
                ("percentage", "100.5"),
                ("inclusive", "false"),
            ],
            "percentage",
        ),
        (
            vec![
                ("display_name", "Words"),
                ("percentage", "lots"),
                ("inclusive", "false"),
            ],
            "percentage",
        ),
        (
            vec![("display_name", "No way"), ("percentage", "5")],
            "inclusive",
        ),
        (
            vec![("percentage", "5"), ("inclusive", "true")],
            "display_name",
        ),
        (
            vec![
                ("display_name", "Odd"),
                ("percentage", "5"),
                ("inclusive", "true"),
                ("tax_type", "poll_tax"),
            ],
            "tax_type",
        ),
    ] {
        let (status, body) = api.post("/v1/tax_rates", &form).await;
        assert_param_error(status, &body, param);
    }

    // percentage and inclusive are immutable: Stripe does not even know them on update.
    for (param, value) in [("percentage", "25"), ("inclusive", "true")] {
        let (status, refused) = api
            .post(&format!("/v1/tax_rates/{}", id(&vat)), &[(param, value)])
            .await;
        assert_param_error(status, &refused, param);
        assert_eq!(refused["error"]["code"], "parameter_unknown");
    }
    let (status, renamed) = api
        .post(
            &format!("/v1/tax_rates/{}", id(&vat)),
            &[("display_name", "UK VAT"), ("active", "false")],
        )
        .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["display_name"], "UK VAT");
    assert_eq!(renamed["active"], false);
    assert_eq!(renamed["percentage"], 20.0);

    assert_eq!(
        api.list_ids("/v1/tax_rates").await,
        sorted(&[id(&reduced), id(&vat)])
    );
    assert_eq!(
        api.list_ids("/v1/tax_rates?active=true").await,
        [id(&reduced)]
    );
    assert_eq!(
        api.list_ids("/v1/tax_rates?inclusive=false").await,
        [id(&vat)]
    );
    assert_eq!(
        api.list_ids("/v1/tax_rates?inclusive=true&active=false")
            .await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn catalog_events_carry_previous_attributes() {
    let db = TestDatabase::new().await;
    let (_, key) = new_project(&db.url, "Events");
    let server = start_server(&db.url);
    let api = api(&server, &key);

    let (_, product) = api.post("/v1/products", &[("name", "Basic")]).await;
    api.post(
        &format!("/v1/products/{}", id(&product)),
        &[("name", "Basic plus")],
    )
    .await;
    let (_, price) = api
        .post(
            "/v1/prices",
            &[
                ("product", &id(&product)),
                ("currency", "usd"),
                ("unit_amount", "900"),
            ],
        )
        .await;
    api.post(
        &format!("/v1/prices/{}", id(&price)),
        &[("active", "false")],
    )
    .await;
    let (_, rate) = api
        .post(
            "/v1/tax_rates",
            &[
                ("display_name", "Sales tax"),
                ("percentage", "8.875"),
                ("inclusive", "false"),
                ("state", "ny"),
                ("country", "US"),
            ],
        )
        .await;
    api.post(
        &format!("/v1/tax_rates/{}", id(&rate)),
        &[("description", "New York City")],
    )
    .await;
    let (_, scratch) = api.post("/v1/products", &[("name", "Scratch")]).await;
    api.delete(&format!("/v1/products/{}", id(&scratch))).await;

    let (_, events) = api.get("/v1/events?limit=100").await;
    let types: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    for expected in [
        "product.created",
        "product.updated",
        "product.deleted",
        "price.created",
        "price.updated",
        "tax_rate.created",
        "tax_rate.updated",
    ] {
        assert!(types.contains(&expected), "missing {expected} in {types:?}");
    }

    let (_, updated) = api.get("/v1/events?type=product.updated").await;
    let event = &updated["data"][0];
    assert_eq!(event["data"]["object"]["name"], "Basic plus");
    assert_eq!(event["data"]["previous_attributes"]["name"], "Basic");
    let (_, updated) = api.get("/v1/events?type=price.updated").await;
    let event = &updated["data"][0];
    assert_eq!(event["data"]["object"]["active"], false);
    assert_eq!(event["data"]["previous_attributes"]["active"], true);
    assert!(
        event["data"]["previous_attributes"]
            .get("unit_amount")
            .is_none(),
        "only what changed: {event}"
    );
    let (_, updated) = api.get("/v1/events?type=tax_rate.updated").await;
    let event = &updated["data"][0];
    assert_eq!(event["data"]["object"]["description"], "New York City");
    assert_eq!(event["data"]["object"]["state"], "NY");
    assert_eq!(event["data"]["object"]["percentage"], 8.875);
    assert_eq!(
        event["data"]["previous_attributes"]["description"],
        Value::Null
    );
    let (_, created) = api.get("/v1/events?type=price.created").await;
    assert!(
        created["data"][0]["data"]
            .get("previous_attributes")
            .is_none(),
        "only *.updated events carry previous_attributes"
    );
    let (_, deleted) = api.get("/v1/events?type=product.deleted").await;
    assert_eq!(deleted["data"][0]["data"]["object"]["id"], id(&scratch));
    assert_eq!(deleted["data"][0]["data"]["object"]["name"], "Scratch");
}

#[tokio::test]
async fn another_projects_key_sees_none_of_the_catalog() {
    let db = TestDatabase::new().await;
    let (_, key) = new_project(&db.url, "Owner");
    let (_, other_key) = new_project(&db.url, "Stranger");
    let server = start_server(&db.url);
    let owner = api(&server, &key);
    let stranger = api(&server, &other_key);

    let (_, product) = owner.post("/v1/products", &[("name", "Secret")]).await;
    let (_, price) = owner
        .post(
            "/v1/prices",
            &[
                ("product", &id(&product)),
                ("currency", "gbp"),
                ("unit_amount", "100"),
            ],
        )
        .await;
    let (_, rate) = owner
        .post(
            "/v1/tax_rates",
            &[
                ("display_name", "VAT"),
                ("percentage", "20"),
                ("inclusive", "true"),
            ],
        )
        .await;

    for path in [
        format!("/v1/products/{}", id(&product)),
        format!("/v1/prices/{}", id(&price)),
        format!("/v1/tax_rates/{}", id(&rate)),
    ] {
        let (status, body) = stranger.get(&path).await;
        assert_eq!(status, 404, "GET {path}: {body}");
        assert_eq!(body["error"]["code"], "resource_missing");
        let (status, body) = stranger.post(&path, &[("metadata[x]", "y")]).await;
        assert_eq!(status, 404, "POST {path}: {body}");
    }
    let (status, _) = stranger
        .delete(&format!("/v1/products/{}", id(&product)))
        .await;
    assert_eq!(status, 404);
    for list in ["/v1/products", "/v1/prices", "/v1/tax_rates"] {
        assert!(stranger.list_ids(list).await.is_empty(), "{list}");
    }
    let (status, body) = stranger
        .post(
            "/v1/prices",
            &[
                ("product", &id(&product)),
                ("currency", "gbp"),
                ("unit_amount", "100"),
            ],
        )
        .await;
    assert_param_error(status, &body, "product");
    assert_eq!(body["error"]["code"], "resource_missing");
    let (_, owners_view) = owner.get(&format!("/v1/products/{}", id(&product))).await;
    assert_eq!(owners_view["metadata"], serde_json::json!({}));
}

/// `calmony projects configure` / `show` as JSON.
fn projects_cli(database_url: &str, args: &[&str]) -> Result<Value, String> {
    let output = run(database_url, args);
    if !output.status.success() {
        return Err(stderr_of(&output));
    }
    serde_json::from_str(&stdout_of(&output))
        .map_err(|error| format!("not JSON ({error}): {}", stdout_of(&output)))
}

#[tokio::test]
async fn a_project_takes_a_default_tax_rate_and_billing_settings_from_the_cli() {
    let db = TestDatabase::new().await;
    let (project, key) = new_project(&db.url, "Acme");
    let (other_project, other_key) = new_project(&db.url, "Elsewhere");
    let server = start_server(&db.url);
    let api_of = |key: &str| api(&server, key);

    let shown = projects_cli(&db.url, &["projects", "show", "--project", &project]).unwrap();
    assert_eq!(shown["id"], project.as_str());
    assert_eq!(shown["name"], "Acme");
    let defaults = &shown["billing"];
    assert_eq!(defaults["dunning_retry_days"], serde_json::json!([1, 1, 1]));
    assert_eq!(defaults["default_tax_rate"], Value::Null);
    let prefix = defaults["invoice_prefix"].as_str().unwrap();
    assert_eq!(prefix.len(), 8, "{prefix}");
    assert!(prefix
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));

    let (_, vat) = api_of(&key)
        .post(
            "/v1/tax_rates",
            &[
                ("display_name", "VAT"),
                ("percentage", "20"),
                ("inclusive", "false"),
            ],
        )
        .await;
    let configured = projects_cli(
        &db.url,
        &[
            "projects",
            "configure",
            "--project",
            &project,
            "--default-tax-rate",
            &id(&vat),
            "--invoice-prefix",
            "ACME",
            "--seller-name",
            "Acme Ltd",
            "--seller-address",
            "1 High Street",
            "--seller-address",
            "London EC1A 1AA",
            "--seller-email",
            "billing@acme.example",
            "--seller-tax-id",
            "GB123456789",
            "--brand-color",
            "#1A73E8",
            "--dunning-retry-days",
            "1,2,3",
        ],
    )
    .unwrap();
    let shown = projects_cli(&db.url, &["projects", "show", "--project", &project]).unwrap();
    assert_eq!(shown, configured, "show prints what configure set");
    let billing = &shown["billing"];
    assert_eq!(billing["default_tax_rate"], id(&vat));
    assert_eq!(billing["invoice_prefix"], "ACME");
    assert_eq!(
        billing["seller"],
        serde_json::json!({
            "name": "Acme Ltd",
            "address_lines": ["1 High Street", "London EC1A 1AA"],
            "email": "billing@acme.example",
            "tax_id": "GB123456789",
        })
    );
    assert_eq!(billing["brand_color"], "#1a73e8");
    assert_eq!(billing["dunning_retry_days"], serde_json::json!([1, 2, 3]));

    // Only the settings named change; "" clears an optional one.
    let cleared = projects_cli(
        &db.url,
        &[
            "projects",
            "configure",
            "--project",
            &project,
            "--brand-color",
            "",
        ],
    )
    .unwrap();
    assert_eq!(cleared["billing"]["brand_color"], Value::Null);
    assert_eq!(cleared["billing"]["default_tax_rate"], id(&vat));
    assert_eq!(cleared["billing"]["invoice_prefix"], "ACME");

    // The default tax rate must be one of the project's own, and active.
    let (_, foreign) = api_of(&other_key)
        .post(
            "/v1/tax_rates",
            &[
                ("display_name", "GST"),
                ("percentage", "10"),
                ("inclusive", "true"),
            ],
        )
        .await;
    let refused = projects_cli(
        &db.url,
        &[
            "projects",
            "configure",
            "--project",
            &project,
            "--default-tax-rate",
            &id(&foreign),
        ],
    )
    .unwrap_err();
    assert!(
        refused.contains("is not a tax rate of project"),
        "{refused}"
    );
    let refused = projects_cli(
        &db.url,
        &[
            "projects",
            "configure",
            "--project",
            &project,
            "--default-tax-rate",
            "txr_missing",
        ],
    )
    .unwrap_err();
    assert!(
        refused.contains("is not a tax rate of project"),
        "{refused}"
    );
    api_of(&other_key)
        .post(
            &format!("/v1/tax_rates/{}", id(&foreign)),
            &[("active", "false")],
        )
        .await;
    let refused = projects_cli(
        &db.url,
        &[
            "projects",
            "configure",
            "--project",
            &other_project,
            "--default-tax-rate",
            &id(&foreign),
        ],
    )
    .unwrap_err();
    assert!(refused.contains("archived"), "{refused}");
    for bad in [
        ["--invoice-prefix", "ac"],
        ["--brand-color", "blue"],
        ["--dunning-retry-days", "1,0"],
    ] {
        let mut args = vec!["projects", "configure", "--project", &project];
        args.extend(bad);
        assert!(projects_cli(&db.url, &args).is_err(), "{bad:?}");
    }
    let still = projects_cli(&db.url, &["projects", "show", "--project", &project]).unwrap();
    assert_eq!(still["billing"]["default_tax_rate"], id(&vat));
    assert!(projects_cli(&db.url, &["projects", "show", "--project", "proj_nope"]).is_err());
}
