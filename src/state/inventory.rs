//! The fleet inventory as data: what Vercel last listed for one installation
//! ([`Listing`]), and the pure steps from one listing to the next.
//!
//! A listing is kept in the state so that what was known survives a restart and a failed
//! listing changes nothing: only a listing that succeeded replaces it ([`Listing::merge`]),
//! or the installation's going away ([`Listing::departed_all`]). Resources that were listed
//! and are no more stay in `departed` while a record may still need their details (a pending
//! retirement renders `{resource.metadata.KEY}`); the daemon prunes them
//! ([`Listing::retain_departed`]) once none does. Which resources a policy selects is decided
//! above, not here: a listing holds all of them.
//!
//! Data only: it imports [`crate::resource`] and nothing else of the crate.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::resource::ResourceInfo;

/// What the last successful listing of one installation's resources found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listing {
    /// Vercel's `integrationConfigurationId` (`icfg_...`).
    pub installation_id: String,
    /// When this listing last succeeded (for a gone installation: when it was found gone).
    pub listed_at: DateTime<Utc>,
    /// As last listed, in Vercel's order: all of them (selection is above).
    pub resources: Vec<Arc<ResourceInfo>>,
    /// Resources listed before and not any more (or whose installation is gone), kept
    /// while a record may still need them to retire (templates like {resource.metadata.x}).
    /// Sorted by id, one entry per id.
    pub departed: Vec<Arc<ResourceInfo>>,
    /// The installation is gone (its token file removed, no longer listed by the
    /// installations command, or Vercel answered 404/410 for it).
    pub gone: bool,
    /// Listing it has failed since then (its token unreadable, Vercel unreachable, ...): the
    /// resources above stand meanwhile. `status` shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<ListingFailure>,
}

/// Why an installation's listing fails, and since when. No value: a token error names its
/// source, a Vercel error is scrubbed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListingFailure {
    pub since: DateTime<Utc>,
    pub error: String,
}

impl Listing {
    /// The listing after a successful listing at `listed_at` found `now_listed`: those are
    /// its resources; whatever `previous` held (listed or departed) and is not among them by
    /// id is departed, once per id, with the newest details known (a resource listed last
    /// time wins over an older departed entry of the same id). An installation listed again
    /// is not gone.
    pub fn merge(
        previous: Option<&Listing>,
        installation_id: impl Into<String>,
        listed_at: DateTime<Utc>,
        now_listed: Vec<Arc<ResourceInfo>>,
    ) -> Listing {
        let departed = match previous {
            Some(previous) => {
                let listed: HashSet<&str> = now_listed.iter().map(|r| &*r.id).collect();
                previous.all_known(|r| !listed.contains(&*r.id))
            }
            None => Vec::new(),
        };
        Listing {
            installation_id: installation_id.into(),
            listed_at,
            resources: now_listed,
            departed,
            gone: false,
            failure: None,
        }
    }

    /// The listing of an installation found gone at `at`: every resource it had, listed or
    /// departed, is departed. Taking it again of a listing already gone changes nothing (not
    /// even the time), so a store that writes only changes writes it once.
    pub fn departed_all(&self, at: DateTime<Utc>) -> Listing {
        Listing {
            installation_id: self.installation_id.clone(),
            listed_at: if self.gone { self.listed_at } else { at },
            resources: Vec::new(),
            departed: self.all_known(|_| true),
            gone: true,
            failure: None,
        }
    }

    /// Keeps only the departed resources `keep` says a record still needs.
    pub fn retain_departed(&mut self, keep: impl Fn(&ResourceInfo) -> bool) {
        self.departed.retain(|r| keep(r));
    }

    /// Every resource this listing knows that `wanted` accepts, once per id, sorted by id,
    /// the listed entry winning over a departed one of the same id.
    fn all_known(&self, wanted: impl Fn(&ResourceInfo) -> bool) -> Vec<Arc<ResourceInfo>> {
        let mut by_id: BTreeMap<&str, &Arc<ResourceInfo>> = BTreeMap::new();
        // Departed first, then listed over them: the listed details are the newer.
        for resource in self.departed.iter().chain(&self.resources) {
            if wanted(resource) {
                by_id.insert(&*resource.id, resource);
            }
        }
        by_id.into_values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::resource::MetadataValue;

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, hour, 0, 0)
            .single()
            .unwrap()
    }

    /// A listed resource of `icfg_1` whose metadata `v` tells versions of it apart.
    fn res(id: &str, v: &str) -> Arc<ResourceInfo> {
        let mut info = ResourceInfo::configured("icfg_1", id);
        info.status = Some("ready".to_owned());
        info.metadata
            .insert("v".to_owned(), MetadataValue::String(v.to_owned()));
        Arc::new(info)
    }

    fn ids(resources: &[Arc<ResourceInfo>]) -> Vec<(&str, String)> {
        resources
            .iter()
            .map(|r| {
                (
                    &*r.id,
                    r.metadata
                        .get("v")
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn a_first_listing_has_nothing_departed() {
        let listing = Listing::merge(None, "icfg_1", at(1), vec![res("b", "1"), res("a", "1")]);
        assert_eq!(listing.installation_id, "icfg_1");
        assert_eq!(listing.listed_at, at(1));
        // Vercel's order is kept.
        assert_eq!(
            ids(&listing.resources),
            [("b", "1".into()), ("a", "1".into())]
        );
        assert!(listing.departed.is_empty());
        assert!(!listing.gone);
    }

    #[test]
    fn what_is_no_longer_listed_departs_with_its_newest_details() {
        let first = Listing::merge(None, "icfg_1", at(1), vec![res("a", "1"), res("b", "1")]);
        // b goes.
        let second = Listing::merge(Some(&first), "icfg_1", at(2), vec![res("a", "2")]);
        assert_eq!(ids(&second.resources), [("a", "2".into())]);
        assert_eq!(ids(&second.departed), [("b", "1".into())]);

        // b comes back with new details, a goes, then b goes again: b departs once, with
        // the details it was last listed with, not the older departed ones.
        let third = Listing::merge(
            Some(&second),
            "icfg_1",
            at(3),
            vec![res("b", "3"), res("c", "3")],
        );
        assert_eq!(
            ids(&third.resources),
            [("b", "3".into()), ("c", "3".into())]
        );
        assert_eq!(ids(&third.departed), [("a", "2".into())]);
        let fourth = Listing::merge(Some(&third), "icfg_1", at(4), vec![res("c", "4")]);
        assert_eq!(
            ids(&fourth.departed),
            [("a", "2".into()), ("b", "3".into())]
        );

        // The same listing again: departed unchanged, nothing duplicated.
        let fifth = Listing::merge(Some(&fourth), "icfg_1", at(5), vec![res("c", "4")]);
        assert_eq!(fifth.departed, fourth.departed);
        assert_eq!(
            fifth,
            Listing {
                listed_at: at(5),
                ..fourth.clone()
            }
        );
    }

    #[test]
    fn a_listed_resource_wins_over_a_stale_departed_entry_of_its_id() {
        // A hand-made previous listing holding both (an older build's, or pruned badly).
        let previous = Listing {
            installation_id: "icfg_1".to_owned(),
            listed_at: at(1),
            resources: vec![res("a", "new")],
            departed: vec![res("a", "old"), res("z", "old")],
            gone: false,
            failure: None,
        };
        let next = Listing::merge(Some(&previous), "icfg_1", at(2), vec![]);
        assert_eq!(
            ids(&next.departed),
            [("a", "new".into()), ("z", "old".into())]
        );
    }

    #[test]
    fn a_listing_after_a_gone_one_revives_the_installation() {
        let first = Listing::merge(None, "icfg_1", at(1), vec![res("a", "1")]);
        let gone = first.departed_all(at(2));
        let back = Listing::merge(Some(&gone), "icfg_1", at(3), vec![res("a", "3")]);
        assert!(!back.gone);
        assert_eq!(ids(&back.resources), [("a", "3".into())]);
        assert!(back.departed.is_empty());
    }

    #[test]
    fn a_gone_installation_departs_everything_once() {
        let first = Listing::merge(None, "icfg_1", at(1), vec![res("b", "1"), res("a", "1")]);
        let second = Listing::merge(Some(&first), "icfg_1", at(2), vec![res("a", "2")]);
        let gone = second.departed_all(at(3));
        assert!(gone.gone);
        assert_eq!(gone.installation_id, "icfg_1");
        assert_eq!(gone.listed_at, at(3));
        assert!(gone.resources.is_empty());
        assert_eq!(ids(&gone.departed), [("a", "2".into()), ("b", "1".into())]);
        // Found gone again later: the same listing, so nothing to write.
        assert_eq!(gone.departed_all(at(4)), gone);
    }

    #[test]
    fn retain_departed_prunes_only_departed() {
        let first = Listing::merge(None, "icfg_1", at(1), vec![res("a", "1"), res("b", "1")]);
        let mut second = Listing::merge(Some(&first), "icfg_1", at(2), vec![res("c", "2")]);
        second.retain_departed(|r| &*r.id == "b");
        assert_eq!(ids(&second.departed), [("b", "1".into())]);
        assert_eq!(ids(&second.resources), [("c", "2".into())]);
        second.retain_departed(|_| false);
        assert!(second.departed.is_empty());
        assert_eq!(second.resources.len(), 1);
    }

    #[test]
    fn the_serialized_form_round_trips_and_refuses_unknown_keys() {
        let first = Listing::merge(None, "icfg_1", at(1), vec![res("a", "1"), res("b", "1")]);
        let listing = Listing::merge(Some(&first), "icfg_1", at(2), vec![res("a", "2")]);
        let text = serde_json::to_string(&listing).unwrap();
        assert_eq!(serde_json::from_str::<Listing>(&text).unwrap(), listing);
        let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
        value["surprise"] = serde_json::json!(1);
        assert!(serde_json::from_value::<Listing>(value).is_err());
    }
}
