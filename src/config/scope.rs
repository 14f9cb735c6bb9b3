//! What a policy covers: which installations (`installation`, or `installations = "*"` or a
//! list) and which of their resources (a list of ids, a selector over Vercel's listing, or
//! `"*"`), checked from the TOML as written, and how a listed resource is matched.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;

use super::validate::Validator;
use crate::resource::ResourceInfo;

/// The statuses a selector takes when it names none: resources that serve traffic.
pub const DEFAULT_STATUSES: [&str; 2] = ["ready", "resumed"];
/// A resource listed with this status is being removed: never rotated, whatever selects it.
pub const UNINSTALLED: &str = "uninstalled";

/// Which installations a policy serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallationScope {
    /// `installation = "acme"`: one configured table.
    One(String),
    /// `installations = "*"`: every installation, configured or discovered.
    All,
    /// `installations = ["acme", "icfg_..."]`: configured tables by name, or any
    /// installation (discovered ones too) by id.
    Listed(Vec<String>),
}

/// Which resources of those installations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceScope {
    /// `resources = ["store_abc", ...]`: these ids. Of a single configured installation they
    /// need no listing; of several, only those the listing holds.
    Listed(Vec<String>),
    /// `resources = { ... }` or `"*"`: what the installations' listings hold that matches.
    Selected(ResourceSelector),
}

/// A selector over an installation's listing; every part optional.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceSelector {
    /// Any of these products; `None`: any product.
    pub product_ids: Option<Vec<String>>,
    /// Any of these statuses; `None`: any status (`resources = "*"`). A status is never
    /// `uninstalled` here, whatever was written.
    pub statuses: Option<Vec<String>>,
    /// Each key present with this value (as a template renders it).
    pub metadata: BTreeMap<String, String>,
}

impl ResourceSelector {
    /// `resources = "*"`: every resource the installation lists, whatever its status, but
    /// never one being uninstalled.
    pub fn everything() -> ResourceSelector {
        ResourceSelector::default()
    }

    pub fn matches(&self, resource: &ResourceInfo) -> bool {
        let status = resource.status.as_deref();
        if status == Some(UNINSTALLED) {
            return false;
        }
        if let Some(products) = &self.product_ids
            && !resource
                .product_id
                .as_ref()
                .is_some_and(|p| products.contains(p))
        {
            return false;
        }
        if let Some(statuses) = &self.statuses
            && !status.is_some_and(|s| statuses.iter().any(|w| w == s))
        {
            return false;
        }
        self.metadata.iter().all(|(key, want)| {
            resource
                .metadata
                .get(key)
                .is_some_and(|value| value.to_string() == *want)
        })
    }
}

impl InstallationScope {
    /// Whether the installation (its table name, or its id for a discovered one) is served.
    pub fn covers(&self, name: &str, id: &str) -> bool {
        match self {
            InstallationScope::One(one) => one == name,
            InstallationScope::All => true,
            InstallationScope::Listed(list) => list.iter().any(|e| e == name || e == id),
        }
    }
}

impl ResourceScope {
    /// Whether a listed resource is one of the policy's.
    pub fn matches(&self, resource: &ResourceInfo) -> bool {
        match self {
            ResourceScope::Listed(ids) => {
                ids.iter().any(|id| **id == *resource.id)
                    && resource.status.as_deref() != Some(UNINSTALLED)
            }
            ResourceScope::Selected(selector) => selector.matches(resource),
        }
    }
}

/// `installation` / `installations` as written: exactly one of them.
pub(super) fn installation_scope(
    v: &mut Validator,
    key: &str,
    one: Option<&Spanned<String>>,
    many: Option<&Spanned<toml::Value>>,
    policy_span: Range<usize>,
) -> Option<InstallationScope> {
    match (one, many) {
        (Some(one), None) => Some(InstallationScope::One(one.get_ref().clone())),
        (None, Some(many)) => {
            let field = format!("{key}: installations");
            match many.get_ref() {
                toml::Value::String(s) if s == "*" => Some(InstallationScope::All),
                toml::Value::Array(items) if !items.is_empty() => {
                    let mut out: Vec<String> = Vec::new();
                    for item in items {
                        match item.as_str() {
                            Some(s) if !s.trim().is_empty() => {
                                if out.iter().any(|o| o == s) {
                                    v.problem(
                                        Some(many.span()),
                                        &field,
                                        format!("\"{s}\" is listed twice"),
                                    );
                                }
                                out.push(s.to_owned());
                            }
                            _ => {
                                v.problem(
                                    Some(many.span()),
                                    &field,
                                    "must hold installation table names or ids (non-empty strings)",
                                );
                                return None;
                            }
                        }
                    }
                    Some(InstallationScope::Listed(out))
                }
                _ => {
                    v.problem(
                        Some(many.span()),
                        &field,
                        "must be \"*\" (every installation, configured or discovered) or a non-empty list of installation table names and ids",
                    );
                    None
                }
            }
        }
        (Some(one), Some(_)) => {
            v.problem(
                Some(one.span()),
                format!("{key}: installation"),
                "set either installation or installations, not both",
            );
            None
        }
        (None, None) => {
            v.problem(
                Some(policy_span),
                format!("{key}: installation"),
                "is missing: set installation = \"<table name>\", or installations = \"*\" (or a list) to serve discovered installations",
            );
            None
        }
    }
}

/// The span of each string of the array at `span`: `toml::Value` keeps no spans inside, so
/// the array's text is read again on its own.
fn element_spans(v: &Validator, span: Range<usize>) -> Option<Vec<Range<usize>>> {
    #[derive(serde::Deserialize)]
    struct One {
        x: Vec<Spanned<String>>,
    }
    const PREFIX: &str = "x = ";
    let text = v.source.text.get(span.clone())?;
    let one: One = toml::from_str(&format!("{PREFIX}{text}")).ok()?;
    let shift = |at: usize| at - PREFIX.len() + span.start;
    Some(
        one.x
            .iter()
            .map(|s| shift(s.span().start)..shift(s.span().end))
            .collect(),
    )
}

/// `resources` as written: a list of ids, a selector table, or `"*"`.
pub(super) fn resource_scope(
    v: &mut Validator,
    key: &str,
    raw: &Spanned<toml::Value>,
) -> Option<ResourceScope> {
    let field = format!("{key}: resources");
    let span = Some(raw.span());
    match raw.get_ref() {
        toml::Value::String(s) if s == "*" => {
            Some(ResourceScope::Selected(ResourceSelector::everything()))
        }
        toml::Value::Array(items) => {
            // Each id's own place in the file, so a message points at the id, not the list.
            let spans = element_spans(v, raw.span());
            let at = |i: usize| {
                spans
                    .as_ref()
                    .and_then(|s| s.get(i).cloned())
                    .or_else(|| span.clone())
            };
            if items.is_empty() {
                v.problem(
                    span,
                    &field,
                    "is empty: list at least one Vercel resource id, or select them (resources = { product-ids = [...] } or \"*\")",
                );
                return None;
            }
            let mut ids: Vec<String> = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(id) if id.trim().is_empty() => {
                        v.problem(at(i), &field, "holds an empty resource id");
                    }
                    Some(id) if ids.iter().any(|i| i == id) => {
                        v.problem(at(i), &field, format!("\"{id}\" is listed twice"));
                    }
                    Some(id) => ids.push(id.to_owned()),
                    None => {
                        v.problem(span.clone(), &field, "must hold resource ids (strings)");
                        return None;
                    }
                }
            }
            Some(ResourceScope::Listed(ids))
        }
        toml::Value::Table(table) => selector(v, &field, span, table).map(ResourceScope::Selected),
        _ => {
            v.problem(
                span,
                &field,
                "must be a list of resource ids, a selector table ({ product-ids = [...], status = [...], metadata = { ... } }) or \"*\"",
            );
            None
        }
    }
}

fn selector(
    v: &mut Validator,
    field: &str,
    span: Option<Range<usize>>,
    table: &toml::Table,
) -> Option<ResourceSelector> {
    let before = v.problems.len();
    let mut selector = ResourceSelector {
        product_ids: None,
        statuses: Some(DEFAULT_STATUSES.map(str::to_owned).to_vec()),
        metadata: BTreeMap::new(),
    };
    for (name, value) in table {
        match name.as_str() {
            "product-ids" => {
                selector.product_ids = strings(v, &format!("{field}.product-ids"), &span, value)
            }
            "status" => {
                let statuses = strings(v, &format!("{field}.status"), &span, value);
                if statuses
                    .as_ref()
                    .is_some_and(|s| s.iter().any(|s| s == UNINSTALLED))
                {
                    v.problem(
                        span.clone(),
                        format!("{field}.status"),
                        "an uninstalled resource is never rotated: leave \"uninstalled\" out",
                    );
                }
                selector.statuses = statuses;
            }
            "metadata" => match value {
                toml::Value::Table(entries) => {
                    for (k, want) in entries {
                        let text = match want {
                            toml::Value::String(s) => s.clone(),
                            toml::Value::Integer(n) => n.to_string(),
                            toml::Value::Boolean(b) => b.to_string(),
                            toml::Value::Float(f) => f.to_string(),
                            _ => {
                                v.problem(
                                    span.clone(),
                                    format!("{field}.metadata.{k}"),
                                    "must be a string, a number or a boolean",
                                );
                                continue;
                            }
                        };
                        selector.metadata.insert(k.clone(), text);
                    }
                }
                _ => v.problem(
                    span.clone(),
                    format!("{field}.metadata"),
                    "must be a table of key = value (metadata = { tier = \"pro\" })",
                ),
            },
            other => v.problem(
                span.clone(),
                format!("{field}.{other}"),
                "unknown key: a selector has product-ids, status and metadata",
            ),
        }
    }
    (v.problems.len() == before).then_some(selector)
}

/// A non-empty list of non-empty strings.
fn strings(
    v: &mut Validator,
    field: &str,
    span: &Option<Range<usize>>,
    value: &toml::Value,
) -> Option<Vec<String>> {
    let items = match value {
        toml::Value::Array(items) if !items.is_empty() => items,
        _ => {
            v.problem(span.clone(), field, "must be a non-empty list of strings");
            return None;
        }
    };
    let mut out = Vec::new();
    for item in items {
        match item.as_str() {
            Some(s) if !s.is_empty() => out.push(s.to_owned()),
            _ => {
                v.problem(span.clone(), field, "must be a non-empty list of strings");
                return None;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::MetadataValue;

    fn listed(product: &str, status: Option<&str>, tier: Option<&str>) -> ResourceInfo {
        let mut r = ResourceInfo::configured("icfg_1", "r1");
        r.internal_id = Some("i1".into());
        r.product_id = Some(product.into());
        r.status = status.map(str::to_owned);
        if let Some(t) = tier {
            r.metadata
                .insert("tier".into(), MetadataValue::String(t.into()));
        }
        r
    }

    #[test]
    fn a_selector_matches_product_status_and_metadata() {
        let s = ResourceSelector {
            product_ids: Some(vec!["prod_pg".into()]),
            statuses: Some(DEFAULT_STATUSES.map(str::to_owned).to_vec()),
            metadata: [("tier".to_owned(), "pro".to_owned())].into(),
        };
        assert!(s.matches(&listed("prod_pg", Some("ready"), Some("pro"))));
        assert!(s.matches(&listed("prod_pg", Some("resumed"), Some("pro"))));
        assert!(!s.matches(&listed("prod_redis", Some("ready"), Some("pro"))));
        assert!(!s.matches(&listed("prod_pg", Some("suspended"), Some("pro"))));
        assert!(!s.matches(&listed("prod_pg", None, Some("pro"))));
        assert!(!s.matches(&listed("prod_pg", Some("ready"), Some("free"))));
        assert!(!s.matches(&listed("prod_pg", Some("ready"), None)));
    }

    #[test]
    fn everything_is_every_status_but_uninstalled() {
        let all = ResourceSelector::everything();
        assert!(all.matches(&listed("p", Some("suspended"), None)));
        assert!(all.matches(&listed("p", None, None)));
        assert!(!all.matches(&listed("p", Some(UNINSTALLED), None)));
        let ids = ResourceScope::Listed(vec!["r1".into()]);
        assert!(ids.matches(&listed("p", Some("ready"), None)));
        assert!(!ids.matches(&listed("p", Some(UNINSTALLED), None)));
    }

    #[test]
    fn installation_scopes_cover_by_name_or_id() {
        assert!(InstallationScope::One("acme".into()).covers("acme", "icfg_1"));
        assert!(!InstallationScope::One("acme".into()).covers("icfg_1", "icfg_1"));
        assert!(InstallationScope::All.covers("x", "y"));
        let l = InstallationScope::Listed(vec!["acme".into(), "icfg_9".into()]);
        assert!(l.covers("acme", "icfg_1"));
        assert!(l.covers("icfg_9", "icfg_9"));
        assert!(!l.covers("other", "icfg_2"));
    }
}
