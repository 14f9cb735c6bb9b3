//! What is known of one Vercel resource, none of it secret: the ids a rotation targets and,
//! for a resource found by discovery, what Vercel's listing says of it (name, product,
//! status, metadata). Templates (`{resource.name}`) and provider requests (`resource_info`)
//! read it.
//!
//! A resource named in a policy's `resources = [...]` list is known only by its
//! installation's id and its own id; discovery fills in the rest. This module imports nothing
//! of the crate: config, templates and providers all sit above it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// One resource of one installation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceInfo {
    /// Vercel's `integrationConfigurationId` (`icfg_...`) of its installation.
    #[serde(deserialize_with = "crate::intern::string")]
    pub installation_id: Arc<str>,
    /// The partner's id (`partnerId`): the `{resourceId}` of the secrets PUT. Shared with
    /// the jobs' keys.
    pub id: Arc<str>,
    /// Vercel's own id (`internalId`).
    pub internal_id: Option<String>,
    pub name: Option<String>,
    pub product_id: Option<String>,
    /// `ready`, `suspended`, ... as Vercel lists it.
    pub status: Option<String>,
    pub metadata: Metadata,
}

/// A resource's metadata, by key: a sorted boxed slice rather than a map, since a fleet holds
/// 100,000 of them and a `BTreeMap` node costs ~600 bytes even for one key. Serialized as a
/// JSON object, as Vercel lists it and providers receive it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata(Box<[(String, MetadataValue)]>);

impl Metadata {
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// Sets `key` (tests and hand-made resources; a listing builds it whole).
    pub fn insert(&mut self, key: String, value: MetadataValue) {
        let mut entries: BTreeMap<String, MetadataValue> =
            std::mem::take(self).into_iter().collect();
        entries.insert(key, value);
        *self = entries.into_iter().collect();
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &MetadataValue)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, MetadataValue)> for Metadata {
    /// Sorted by key; of a key given twice, the last value stays (as a map's would).
    fn from_iter<I: IntoIterator<Item = (String, MetadataValue)>>(iter: I) -> Metadata {
        let map: BTreeMap<String, MetadataValue> = iter.into_iter().collect();
        Metadata(map.into_iter().collect())
    }
}

impl IntoIterator for Metadata {
    type Item = (String, MetadataValue);
    type IntoIter = std::vec::IntoIter<(String, MetadataValue)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_vec().into_iter()
    }
}

impl Serialize for Metadata {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Metadata, D::Error> {
        let map = BTreeMap::<String, MetadataValue>::deserialize(deserializer)?;
        Ok(map.into_iter().collect())
    }
}

/// A metadata value as Vercel's listing gives it: a string, a number, a boolean, or an array
/// of strings or of numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetadataValue {
    String(String),
    Number(serde_json::Number),
    Bool(bool),
    Strings(Vec<String>),
    Numbers(Vec<serde_json::Number>),
}

impl fmt::Display for MetadataValue {
    /// How a template renders it: strings as they are, numbers and booleans as JSON writes
    /// them, arrays as their items joined by `,`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn join<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{item}")?;
            }
            Ok(())
        }
        match self {
            MetadataValue::String(s) => f.write_str(s),
            MetadataValue::Number(n) => write!(f, "{n}"),
            MetadataValue::Bool(b) => write!(f, "{b}"),
            MetadataValue::Strings(items) => join(f, items),
            MetadataValue::Numbers(items) => join(f, items),
        }
    }
}

impl ResourceInfo {
    /// A resource a policy lists by id: nothing is known of it beyond the two ids.
    pub fn configured(installation_id: &str, id: &str) -> ResourceInfo {
        ResourceInfo {
            installation_id: installation_id.into(),
            id: id.into(),
            internal_id: None,
            name: None,
            product_id: None,
            status: None,
            metadata: Metadata::default(),
        }
    }

    /// Whether anything beyond the two ids is known (it came from Vercel's listing).
    pub fn is_discovered(&self) -> bool {
        self.internal_id.is_some()
            || self.name.is_some()
            || self.product_id.is_some()
            || self.status.is_some()
            || !self.metadata.is_empty()
    }
}

/// The longest installation id that can name a file (`<id>.token`, `<id>.json`).
pub const MAX_INSTALLATION_ID_LEN: usize = 128;

/// Whether `id` can be an installation's id where it names a file (a discovered
/// installation's `<id>.token`, its inventory's `<id>.json`): 1 to 128 of `A-Z a-z 0-9 _ -`.
/// Anything else (a `/`, `..`, a dot, a control character) could reach another file.
pub fn is_file_safe_installation_id(id: &str) -> bool {
    (1..=MAX_INSTALLATION_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_values_parse_and_render() {
        let parsed: BTreeMap<String, MetadataValue> = serde_json::from_str(
            r#"{"region": "eu", "size": 3, "ratio": 1.5, "ha": true, "zones": ["a", "b"], "ports": [1, 2]}"#,
        )
        .unwrap();
        let rendered: Vec<(String, String)> = parsed
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        assert_eq!(
            rendered,
            [
                ("ha", "true"),
                ("ports", "1,2"),
                ("ratio", "1.5"),
                ("region", "eu"),
                ("size", "3"),
                ("zones", "a,b"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn metadata_reads_and_writes_as_a_json_object_sorted_by_key() {
        let m: Metadata =
            serde_json::from_str(r#"{"zone": "b", "tier": "pro", "size": 3}"#).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m.get("tier"), Some(&MetadataValue::String("pro".into())));
        assert_eq!(m.get("nope"), None);
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"size":3,"tier":"pro","zone":"b"}"#
        );
        let mut m2 = m.clone();
        m2.insert("tier".into(), MetadataValue::String("free".into()));
        m2.insert("a".into(), MetadataValue::Bool(true));
        assert_eq!(
            m2.keys().map(String::as_str).collect::<Vec<_>>(),
            ["a", "size", "tier", "zone"]
        );
        assert_eq!(m2.get("tier"), Some(&MetadataValue::String("free".into())));
    }

    #[test]
    fn a_configured_resource_is_not_discovered() {
        let mut info = ResourceInfo::configured("icfg_1", "res_1");
        assert!(!info.is_discovered());
        info.name = Some("orders".into());
        assert!(info.is_discovered());
    }

    #[test]
    fn file_safe_installation_ids() {
        for ok in ["icfg_1", "icfg_AbC-9", "a", &"x".repeat(128)] {
            assert!(is_file_safe_installation_id(ok), "{ok}");
        }
        for bad in [
            "",
            "..",
            ".",
            "a/b",
            "../icfg_1",
            "icfg.1",
            "icfg 1",
            "icfg\n",
            "icfg\u{0}",
            "ícfg",
            &"x".repeat(129),
        ] {
            assert!(!is_file_safe_installation_id(bad), "{bad:?}");
        }
    }
}
