//! Griffin's error bodies. They are JSON, loosely JSON:API-shaped: a `detail`, plus a
//! `source` JSON pointer for 400s. The exact top level is UNCONFIRMED, so [`ApiProblem::parse`]
//! reads both `{"errors":[{…}]}` and a flat `{"title","detail","source"}`, and the simulator
//! can answer in either ([`ErrorShape`]).

use serde::{Deserialize, Serialize};

/// One error as Griffin reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErrorObject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ErrorSource>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErrorSource {
    /// A JSON pointer into the request body (`/payment-amount/value`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// A query parameter (`page[size]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

/// A non-2xx answer: the status and whatever errors its body held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiProblem {
    pub status: u16,
    pub errors: Vec<ErrorObject>,
    /// The body as received, capped, for bodies that are neither shape.
    pub raw_body: String,
}

/// The longest body kept in [`ApiProblem::raw_body`].
const RAW_BODY_LIMIT_BYTES: usize = 2_048;

impl ApiProblem {
    pub fn parse(status: u16, body: &[u8]) -> Self {
        let raw_body =
            String::from_utf8_lossy(&body[..body.len().min(RAW_BODY_LIMIT_BYTES)]).into_owned();
        let errors = match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(object)) => match object.get("errors") {
                Some(serde_json::Value::Array(list)) => list
                    .iter()
                    .filter_map(|error| serde_json::from_value(error.clone()).ok())
                    .collect(),
                _ => serde_json::from_value::<ErrorObject>(serde_json::Value::Object(object))
                    .ok()
                    .filter(|error| error.detail.is_some() || error.title.is_some())
                    .into_iter()
                    .collect(),
            },
            _ => Vec::new(),
        };
        Self {
            status,
            errors,
            raw_body,
        }
    }

    /// The first `detail` (or `title`), for messages.
    pub fn detail(&self) -> Option<&str> {
        self.errors
            .iter()
            .find_map(|error| error.detail.as_deref().or(error.title.as_deref()))
    }
}

/// How the simulator shapes an error body (Griffin's exact top level is UNCONFIRMED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorShape {
    /// `{"errors":[{"status","title","detail","source"}]}` (JSON:API).
    #[default]
    JsonApi,
    /// `{"status","title","detail","source"}`.
    Flat,
}

impl ErrorShape {
    pub fn render(self, error: &ErrorObject) -> serde_json::Value {
        match self {
            ErrorShape::JsonApi => serde_json::json!({ "errors": [error] }),
            ErrorShape::Flat => serde_json::to_value(error).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_shapes() {
        let json_api = ApiProblem::parse(
            400,
            br#"{"errors":[{"status":"400","title":"Bad request","detail":"page[size] must be 1-200","source":{"parameter":"page[size]"}}]}"#,
        );
        assert_eq!(json_api.detail(), Some("page[size] must be 1-200"));
        let flat = ApiProblem::parse(404, br#"{"title":"Not found","detail":"no such account"}"#);
        assert_eq!(flat.detail(), Some("no such account"));
        let neither = ApiProblem::parse(502, b"<html>bad gateway</html>");
        assert!(neither.errors.is_empty());
        assert_eq!(neither.raw_body, "<html>bad gateway</html>");
    }
}
