//! The answer of `GET /v1/installations/{id}/resources`: what one listed resource is, how the
//! body is parsed, and its conversion into [`ResourceInfo`].
//!
//! Parsed as the OpenAPI operation says (`partnerId`, `internalId`, `name`, `productId`
//! required; `status` and `metadata` optional) and leniently beyond it: fields Vercel may add
//! are ignored, a `status` outside today's enum is kept as written, and a metadata value of a
//! kind the schema does not list is dropped (that key alone), so a new Vercel feature never
//! makes a whole installation unlistable.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::resource::{MetadataValue, ResourceInfo};

/// Largest listing body read: one answer holds every resource of an installation (no paging),
/// a few hundred bytes each, so this is tens of thousands of resources.
pub(crate) const LIST_BODY_CAP: usize = 32 * 1024 * 1024;

/// One resource of an installation as Vercel lists it. None of it is secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedResource {
    /// `partnerId`: the partner's own id, the `{resourceId}` of the secrets PUT.
    pub partner_id: String,
    /// `internalId`: Vercel's id.
    pub internal_id: String,
    pub name: String,
    pub product_id: String,
    /// `ready`, `suspended`, ... as Vercel wrote it; `None` when absent.
    pub status: Option<String>,
    pub metadata: crate::resource::Metadata,
}

impl ListedResource {
    /// What the rest of the daemon knows of it, for templates and provider requests.
    /// `installation_id` is shared by every resource of the listing.
    pub fn into_info(self, installation_id: &std::sync::Arc<str>) -> ResourceInfo {
        ResourceInfo {
            installation_id: installation_id.clone(),
            id: self.partner_id.into(),
            internal_id: Some(self.internal_id),
            name: Some(self.name),
            product_id: Some(self.product_id),
            status: self.status,
            metadata: self.metadata,
        }
    }
}

#[derive(Deserialize)]
struct ListBody {
    resources: Vec<RawResource>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawResource {
    partner_id: String,
    internal_id: String,
    name: String,
    product_id: String,
    #[serde(default)]
    status: Option<String>,
    /// Read as plain JSON first, so one value of an unknown kind drops only its key.
    #[serde(default)]
    metadata: Option<BTreeMap<String, Value>>,
}

/// Parses a listing body. The error says what is wrong and where (line and column), never
/// what the body holds: a serde message can quote a value.
pub(crate) fn parse(body: &[u8]) -> Result<Vec<ListedResource>, String> {
    let parsed: ListBody = serde_json::from_slice(body).map_err(|e| describe(&e))?;
    Ok(parsed
        .resources
        .into_iter()
        .map(|raw| ListedResource {
            partner_id: raw.partner_id,
            internal_id: raw.internal_id,
            name: raw.name,
            product_id: raw.product_id,
            status: raw.status,
            metadata: raw
                .metadata
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(key, value)| metadata_value(value).map(|v| (key, v)))
                .collect(),
        })
        .collect())
}

/// A metadata value of a kind the schema lists; `None` for any other (null, object, a mixed
/// or nested array).
fn metadata_value(value: Value) -> Option<MetadataValue> {
    match value {
        Value::String(s) => Some(MetadataValue::String(s)),
        Value::Number(n) => Some(MetadataValue::Number(n)),
        Value::Bool(b) => Some(MetadataValue::Bool(b)),
        Value::Array(items) => {
            if items.iter().all(Value::is_string) {
                let strings = items.into_iter().filter_map(|v| match v {
                    Value::String(s) => Some(s),
                    _ => None,
                });
                Some(MetadataValue::Strings(strings.collect()))
            } else if items.iter().all(Value::is_number) {
                let numbers = items.into_iter().filter_map(|v| match v {
                    Value::Number(n) => Some(n),
                    _ => None,
                });
                Some(MetadataValue::Numbers(numbers.collect()))
            } else {
                None
            }
        }
        Value::Null | Value::Object(_) => None,
    }
}

/// What kind of failure, and where: serde_json's own text is kept only for a missing field
/// (it names the field, nothing of the body); an invalid value's text may quote the value.
fn describe(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match error.classify() {
        Category::Io => "could not be read".to_owned(),
        Category::Syntax => "is not valid JSON".to_owned(),
        Category::Eof => "ends early (cut off?)".to_owned(),
        Category::Data => {
            let text = error.to_string();
            match text.find("missing field `") {
                Some(start) => {
                    let rest = &text[start..];
                    let end = rest[15..].find('`').map_or(rest.len(), |i| i + 16);
                    format!("lacks a required field ({})", &rest[..end])
                }
                None => "does not have the documented shape (a value of the wrong type)".to_owned(),
            }
        }
    };
    format!(
        "the body {what} at line {} column {}",
        error.line(),
        error.column()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_never_quote_the_body() {
        for body in [
            &br#"{"resources": [{"partnerId": "canary-value-1"}]}"#[..],
            br#"{"resources": [{"partnerId": 1, "internalId": "canary-value-1", "name": "n", "productId": "p"}]}"#,
            br#"{"resources": "canary-value-1"}"#,
            br#"canary-value-1"#,
            br#"{"resources": [{"partnerId": "canary-value-1""#,
        ] {
            let err = parse(body).expect_err("invalid");
            assert!(!err.contains("canary"), "{err}");
            assert!(err.contains("line 1 column"), "{err}");
        }
        let err = parse(br#"{"resources": [{"partnerId": "canary-value-1"}]}"#).expect_err("x");
        assert!(err.contains("missing field `internalId`"), "{err}");
    }

    #[test]
    fn odd_metadata_drops_only_its_key() {
        let listed = parse(
            br#"{"resources": [{"partnerId": "r", "internalId": "i", "name": "n", "productId": "p",
                "metadata": {"ok": "eu", "null": null, "obj": {}, "mixed": [1, "a"], "empty": []}}]}"#,
        )
        .expect("parses");
        let keys: Vec<&str> = listed[0].metadata.keys().map(String::as_str).collect();
        assert_eq!(keys, ["empty", "ok"]);
    }
}
