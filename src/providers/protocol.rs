//! The messages of DESIGN's provider protocol, shared by the `command` provider (a JSON
//! object on a child's stdin and stdout) and the `http` provider (the same objects as a POST
//! body and its answer): the requests, byte for byte, and the strict parsing of the answers.
//! How a message travels (a child process, an HTTP call) and what a failed call means is each
//! provider's own business.
//!
//! - **Requests** ([`Request`]) are serialized straight into a [`SecretBuf`], which zeroizes
//!   them: a `verify` request carries the new credential's values.
//! - **A `create` answer** is exactly `{"handle": "<non-empty>", "fields": {"name": "value",
//!   ...}}` with at least one field ([`parse_create`]); any other key, a non-string value or a
//!   missing key is refused. Values go straight into `SecretString`s as serde reads them. If
//!   the config lists `fields`, every listed name must be present.
//! - **A `verify` or `retire` answer** is any JSON object; its keys are ignored
//!   ([`parse_any_object`]).
//!
//! Reasons for refusing an answer never quote it: serde_json's error `Display` can quote the
//! offending input, which may be a value, so reasons are built from the error's category,
//! line and column plus a fixed description (see [`describe_json_error`]). They name where
//! the answer came from ([`Channel`]): "stdout" for a program, "the response body" for an API.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use super::{Credential, Target};
use crate::secret::Fields;

// The buffer lives with the child-process runner, which reads answers into it; requests are
// serialized into it here.
pub(crate) use crate::child::SecretBuf;

/// Where an answer came from, for the reasons that refuse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channel {
    /// A provider program's stdout.
    Stdout,
    /// The body of an API's answer.
    ResponseBody,
}

impl Channel {
    fn noun(self) -> &'static str {
        match self {
            Channel::Stdout => "stdout",
            Channel::ResponseBody => "the response body",
        }
    }
}

/// One call of the protocol, as the provider is asked it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Request<'a> {
    Create {
        target: &'a Target,
        rotation_id: &'a str,
        previous_handle: Option<&'a str>,
    },
    Verify {
        target: &'a Target,
        rotation_id: &'a str,
        credential: &'a Credential,
    },
    Retire {
        target: &'a Target,
        handle: &'a str,
    },
}

impl<'a> Request<'a> {
    /// The protocol's `action`: `create`, `verify` or `retire`.
    pub fn action(&self) -> &'static str {
        match self {
            Request::Create { .. } => "create",
            Request::Verify { .. } => "verify",
            Request::Retire { .. } => "retire",
        }
    }

    /// The secret values the request carries, so that whatever comes back (stderr, an error
    /// message) can be scrubbed of them.
    pub fn secrets(&self) -> Vec<&'a SecretString> {
        match self {
            Request::Verify { credential, .. } => credential.fields.values().collect(),
            Request::Create { .. } | Request::Retire { .. } => Vec::new(),
        }
    }

    /// The request's JSON, exactly as DESIGN shows it, in a buffer that zeroizes itself.
    /// Serializing strings and maps into memory does not fail; the `Result` only keeps the
    /// callers' `?` honest.
    pub fn encode(&self) -> Result<SecretBuf, serde_json::Error> {
        let action = self.action();
        match *self {
            Request::Create {
                target,
                rotation_id,
                previous_handle,
            } => SecretBuf::json(&CreateRequest {
                action,
                rotation_id,
                policy: &target.policy,
                installation: &target.installation,
                installation_id: &target.installation_id,
                resource: &target.resource,
                resource_info: ResourceInfoBody::of(target),
                previous_handle,
            }),
            Request::Verify {
                target,
                rotation_id,
                credential,
            } => SecretBuf::json(&VerifyRequest {
                action,
                rotation_id,
                policy: &target.policy,
                installation_id: &target.installation_id,
                resource: &target.resource,
                resource_info: ResourceInfoBody::of(target),
                handle: &credential.handle,
                fields: ExposedFields(&credential.fields),
            }),
            Request::Retire { target, handle } => SecretBuf::json(&RetireRequest {
                action,
                policy: &target.policy,
                installation_id: &target.installation_id,
                resource: &target.resource,
                resource_info: ResourceInfoBody::of(target),
                handle,
            }),
        }
    }
}

#[derive(Serialize)]
struct CreateRequest<'a> {
    action: &'static str,
    rotation_id: &'a str,
    policy: &'a str,
    installation: &'a str,
    /// Vercel's id of the installation (`icfg_...`).
    installation_id: &'a str,
    resource: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_info: Option<ResourceInfoBody<'a>>,
    /// `null` on the first rotation: the protocol always sends the key.
    previous_handle: Option<&'a str>,
}

#[derive(Serialize)]
struct VerifyRequest<'a> {
    action: &'static str,
    rotation_id: &'a str,
    policy: &'a str,
    installation_id: &'a str,
    resource: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_info: Option<ResourceInfoBody<'a>>,
    handle: &'a str,
    fields: ExposedFields<'a>,
}

#[derive(Serialize)]
struct RetireRequest<'a> {
    action: &'static str,
    policy: &'a str,
    installation_id: &'a str,
    resource: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_info: Option<ResourceInfoBody<'a>>,
    handle: &'a str,
}

/// `resource_info`: what Vercel's listing says of a discovered resource, absent keys omitted
/// (DESIGN, "Fleets"). Not sent for a resource the config lists by id.
#[derive(Serialize)]
struct ResourceInfoBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    internal_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    product_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    #[serde(skip_serializing_if = "crate::resource::Metadata::is_empty")]
    metadata: &'a crate::resource::Metadata,
}

impl<'a> ResourceInfoBody<'a> {
    fn of(target: &'a Target) -> Option<ResourceInfoBody<'a>> {
        let info = target
            .resource_info
            .as_deref()
            .filter(|i| i.is_discovered())?;
        Some(ResourceInfoBody {
            internal_id: info.internal_id.as_deref(),
            name: info.name.as_deref(),
            product_id: info.product_id.as_deref(),
            status: info.status.as_deref(),
            metadata: &info.metadata,
        })
    }
}

/// A create answer. Values go straight into `SecretString`s as serde reads them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAnswer {
    handle: String,
    fields: Fields,
}

const CREATE_SHAPE: &str =
    "an object with exactly `handle` (a string) and `fields` (an object mapping names to strings)";

/// The answer's bytes as text, or a reason (safe to show) when they are not UTF-8.
pub(crate) fn text_of(bytes: &[u8], from: Channel) -> Result<&str, String> {
    crate::child::utf8_text(bytes, from.noun())
}

/// Parses a create answer, strictly, without ever quoting it in the reason. `promised` is the
/// config's `fields` list: every name in it must be present.
pub(crate) fn parse_create(
    text: &str,
    from: Channel,
    promised: Option<&[String]>,
) -> Result<Credential, String> {
    require_object(text, from)?;
    let answer = serde_json::from_str::<CreateAnswer>(text).map_err(|e| {
        let expected = match e.classify() {
            serde_json::error::Category::Data => diagnose_create(text),
            _ => CREATE_SHAPE,
        };
        describe_json_error(from, expected, &e)
    })?;
    check_created(&answer, promised)?;
    let CreateAnswer { handle, fields } = answer;
    // Programs and APIs name the previous credential themselves, from `previous_handle`.
    Ok(Credential {
        handle,
        fields,
        supersedes: None,
    })
}

/// Checks a create answer beyond its shape: what serde cannot say.
fn check_created(answer: &CreateAnswer, promised: Option<&[String]>) -> Result<(), String> {
    if answer.handle.is_empty() {
        return Err("`handle` is empty".to_owned());
    }
    if answer.fields.is_empty() {
        return Err("`fields` is empty; a credential needs at least one field".to_owned());
    }
    if let Some(promised) = promised {
        // Names are not secret: they are what templates refer to.
        let missing: Vec<String> = promised
            .iter()
            .filter(|name| !answer.fields.contains_key(name.as_str()))
            .map(|name| format!("`{name}`"))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "`fields` lacks {} that the config's `fields` list promises",
                missing.join(", ")
            ));
        }
    }
    Ok(())
}

/// Which part of the create shape a well-formed but wrong answer broke. Only names of keys
/// the protocol defines appear, never a value or a key the provider made up.
fn diagnose_create(text: &str) -> &'static str {
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(text) else {
        return CREATE_SHAPE;
    };
    let verdict = match value.as_object() {
        None => CREATE_SHAPE,
        Some(map) if map.keys().any(|k| k != "handle" && k != "fields") => {
            "only the keys `handle` and `fields` are allowed"
        }
        Some(map) => match (map.get("handle"), map.get("fields")) {
            (None, _) => "`handle` is missing",
            (Some(h), _) if !h.is_string() => "`handle` must be a string",
            (_, None) => "`fields` is missing",
            (_, Some(serde_json::Value::Object(fields)))
                if fields.values().all(|v| v.is_string()) =>
            {
                CREATE_SHAPE
            }
            (_, Some(_)) => "`fields` must map names to strings",
        },
    };
    zeroize_strings(&mut value);
    verdict
}

/// Wipes every string in a parsed JSON value (answers reparsed into plain `String`s hold
/// values) before it drops.
pub(crate) fn zeroize_strings(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(zeroize_strings),
        serde_json::Value::Object(map) => map.values_mut().for_each(zeroize_strings),
        _ => {}
    }
}

/// Checks a verify or retire answer: any JSON object, contents ignored.
pub(crate) fn parse_any_object(text: &str, from: Channel) -> Result<(), String> {
    require_object(text, from)?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| describe_json_error(from, "a JSON object", &e))
}

/// Rejects anything but `{...}` up front: serde's derived structs would also take an array.
fn require_object(text: &str, from: Channel) -> Result<(), String> {
    match text.trim_start().chars().next() {
        None => Err(format!("{} is empty; expected a JSON object", from.noun())),
        Some('{') => Ok(()),
        Some(_) => Err(format!("{} is not a JSON object", from.noun())),
    }
}

/// A reason for a JSON answer that did not parse, without quoting any of it: the category,
/// line and column from `error`, and `expected`, a fixed description of the right shape.
pub(crate) fn describe_json_error(
    from: Channel,
    expected: &str,
    error: &serde_json::Error,
) -> String {
    use serde_json::error::Category;
    let kind = match error.classify() {
        Category::Syntax => "syntax error",
        Category::Data => "data error",
        Category::Eof => "unexpected end",
        Category::Io => "read error",
    };
    format!(
        "{} is not the expected JSON: {expected} ({kind} at line {}, column {})",
        from.noun(),
        error.line(),
        error.column()
    )
}

/// Serializes a secret as a JSON string, for requests (secrecy deliberately has no
/// `Serialize` for `SecretString`).
pub(crate) struct Exposed<'a>(pub &'a SecretString);

impl Serialize for Exposed<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.expose_secret())
    }
}

/// Serializes fields as a JSON object of name to value, for requests.
pub(crate) struct ExposedFields<'a>(pub &'a Fields);

impl Serialize for ExposedFields<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, Exposed(v))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> SecretString {
        SecretString::from(v.to_owned())
    }

    fn target() -> Target {
        Target {
            policy: "orders-db".into(),
            installation: "acme".into(),
            resource: "store_abc".into(),
            installation_id: "icfg_1".into(),
            resource_info: None,
        }
    }

    fn reason(text: &str) -> String {
        match parse_create(text, Channel::Stdout, None) {
            Ok(_) => panic!("accepted {text}"),
            Err(reason) => reason,
        }
    }

    #[test]
    fn requests_are_exactly_the_protocols_json() {
        let target = target();
        let mut fields = Fields::new();
        fields.insert("password".into(), s("pw"));
        let credential = Credential {
            handle: "key-42".into(),
            fields,
            supersedes: None,
        };
        let table = [
            (
                Request::Create {
                    target: &target,
                    rotation_id: "rot-1",
                    previous_handle: None,
                },
                r#"{"action":"create","rotation_id":"rot-1","policy":"orders-db","installation":"acme","installation_id":"icfg_1","resource":"store_abc","previous_handle":null}"#,
            ),
            (
                Request::Create {
                    target: &target,
                    rotation_id: "rot-2",
                    previous_handle: Some("key-41"),
                },
                r#"{"action":"create","rotation_id":"rot-2","policy":"orders-db","installation":"acme","installation_id":"icfg_1","resource":"store_abc","previous_handle":"key-41"}"#,
            ),
            (
                Request::Verify {
                    target: &target,
                    rotation_id: "rot-1",
                    credential: &credential,
                },
                r#"{"action":"verify","rotation_id":"rot-1","policy":"orders-db","installation_id":"icfg_1","resource":"store_abc","handle":"key-42","fields":{"password":"pw"}}"#,
            ),
            (
                Request::Retire {
                    target: &target,
                    handle: "key-41",
                },
                r#"{"action":"retire","policy":"orders-db","installation_id":"icfg_1","resource":"store_abc","handle":"key-41"}"#,
            ),
        ];
        for (request, want) in table {
            let buf = request.encode().unwrap();
            assert_eq!(std::str::from_utf8(buf.as_bytes()).unwrap(), want);
            let secrets = request.secrets().len();
            assert_eq!(secrets, usize::from(request.action() == "verify"));
        }
    }

    #[test]
    fn requests_for_a_discovered_resource_carry_its_info_without_absent_keys() {
        let mut info = crate::resource::ResourceInfo::configured("icfg_1", "store_abc");
        info.name = Some("orders".into());
        info.status = Some("ready".into());
        info.metadata.insert(
            "tier".into(),
            crate::resource::MetadataValue::String("pro".into()),
        );
        let discovered = Target {
            resource_info: Some(std::sync::Arc::new(info)),
            ..target()
        };
        let request = Request::Retire {
            target: &discovered,
            handle: "key-41",
        };
        let buf = request.encode().unwrap();
        assert_eq!(
            std::str::from_utf8(buf.as_bytes()).unwrap(),
            r#"{"action":"retire","policy":"orders-db","installation_id":"icfg_1","resource":"store_abc","resource_info":{"name":"orders","status":"ready","metadata":{"tier":"pro"}},"handle":"key-41"}"#
        );
        // Known only by id: no resource_info at all.
        let configured = Target {
            resource_info: Some(std::sync::Arc::new(
                crate::resource::ResourceInfo::configured("icfg_1", "store_abc"),
            )),
            ..target()
        };
        let buf = Request::Retire {
            target: &configured,
            handle: "key-41",
        }
        .encode()
        .unwrap();
        assert!(
            !std::str::from_utf8(buf.as_bytes())
                .unwrap()
                .contains("resource_info")
        );
    }

    #[test]
    fn create_answers_parse_strictly_and_reasons_name_the_broken_part() {
        let ok = parse_create(
            r#" {"handle":"key-42","fields":{"password":"pw","username":"u"}}"#,
            Channel::Stdout,
            None,
        )
        .unwrap();
        assert_eq!(ok.handle, "key-42");
        assert_eq!(ok.fields["password"].expose_secret(), "pw");
        assert_eq!(
            ok.supersedes, None,
            "programs name the previous credential themselves"
        );

        let cases = [
            (
                r#"{"fields":{"password":"canary-1"}}"#,
                "`handle` is missing",
            ),
            (r#"{"handle":"h"}"#, "`fields` is missing"),
            (
                r#"{"handle":7,"fields":{"password":"canary-1"}}"#,
                "`handle` must be a string",
            ),
            (
                r#"{"handle":"h","fields":{"password":"canary-1"},"x":"canary-1"}"#,
                "only the keys",
            ),
            (
                r#"{"handle":"h","fields":{"password":"canary-1","n":5}}"#,
                "`fields` must map names to strings",
            ),
            (
                r#"{"handle":"h","fields":["canary-1"]}"#,
                "`fields` must map names to strings",
            ),
            (
                r#"{"handle":"h","fields":{"password":"canary-1"}"#,
                "unexpected end",
            ),
            (
                r#"{"handle":"h","fields":{"password":"canary-1"}} canary-1"#,
                "syntax error",
            ),
            (r#"["h",{"password":"canary-1"}]"#, "not a JSON object"),
            ("", "stdout is empty"),
            (
                r#"{"handle":"","fields":{"password":"canary-1"}}"#,
                "`handle` is empty",
            ),
            (r#"{"handle":"h","fields":{}}"#, "`fields` is empty"),
        ];
        for (text, want) in cases {
            let got = reason(text);
            assert!(got.contains(want), "{text}: {got}");
            assert!(!got.contains("canary"), "{text}: {got}");
        }
    }

    #[test]
    fn promised_fields_must_all_be_present() {
        let promised = ["username".to_owned(), "password".to_owned()];
        let answer = r#"{"handle":"h","fields":{"password":"canary-1"}}"#;
        let got = parse_create(answer, Channel::Stdout, Some(&promised)).err();
        assert_eq!(
            got.as_deref(),
            Some("`fields` lacks `username` that the config's `fields` list promises")
        );
        let answer = r#"{"handle":"h","fields":{"password":"p","username":"u"}}"#;
        assert!(parse_create(answer, Channel::Stdout, Some(&promised)).is_ok());
    }

    #[test]
    fn reasons_name_the_channel() {
        let from = Channel::ResponseBody;
        let err = |r: Result<Credential, String>| r.err().unwrap_or_default();
        assert_eq!(
            err(parse_create("", from, None)),
            "the response body is empty; expected a JSON object"
        );
        assert_eq!(
            err(parse_create("[]", from, None)),
            "the response body is not a JSON object"
        );
        assert!(
            err(parse_create("{", from, None))
                .starts_with("the response body is not the expected JSON")
        );
        assert_eq!(
            text_of(b"{\"a\":\"\xff\"}", from).err().as_deref(),
            Some("the response body is not UTF-8 (invalid byte at offset 6)")
        );
        assert_eq!(
            text_of(b"ok\xfe", Channel::Stdout).err().as_deref(),
            Some("stdout is not UTF-8 (invalid byte at offset 2)")
        );
    }

    #[test]
    fn verify_and_retire_answers_must_be_objects_of_any_content() {
        for from in [Channel::Stdout, Channel::ResponseBody] {
            assert!(parse_any_object("{}", from).is_ok());
            assert!(parse_any_object(r#"{"note":"fine","n":[1]}"#, from).is_ok());
            for bad in ["", "[]", "null", "\"ok\"", "{", "{} {}"] {
                assert!(parse_any_object(bad, from).is_err(), "{bad:?} accepted");
            }
        }
    }

    #[test]
    fn describe_json_error_never_quotes_the_input() {
        let err = serde_json::from_str::<Vec<u32>>(r#"["hunter2-canary"]"#).unwrap_err();
        assert!(
            err.to_string().contains("hunter2-canary"),
            "serde does quote: {err}"
        );
        let reason = describe_json_error(Channel::Stdout, "a list of numbers", &err);
        assert!(!reason.contains("hunter2"), "{reason}");
        assert_eq!(
            reason,
            "stdout is not the expected JSON: a list of numbers (data error at line 1, column 17)"
        );
    }

    #[test]
    fn zeroize_strings_wipes_nested_strings() {
        let mut value: serde_json::Value =
            serde_json::from_str(r#"{"a":["secret",{"b":"other"}],"n":1}"#).unwrap();
        zeroize_strings(&mut value);
        assert_eq!(value, serde_json::json!({"a": ["", {"b": ""}], "n": 1}));
    }

    #[test]
    fn exposed_fields_serialize_as_a_json_object() {
        let mut fields = Fields::new();
        fields.insert("password".into(), s("p\"w"));
        fields.insert("username".into(), s("u"));
        let buf = SecretBuf::json(&ExposedFields(&fields)).unwrap();
        assert_eq!(buf.as_bytes(), br#"{"password":"p\"w","username":"u"}"#);
    }
}
