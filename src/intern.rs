//! One shared copy of the strings many records repeat (policy names, installation names and
//! ids, secret names) while a store loads: 100,000 records of one policy then hold one
//! "orders-db", not 100,000.
//!
//! The interner lives only for the load ([`interning`]), on the loading thread: nothing is
//! kept after it, so names that leave the config are freed with the last record holding them.
//! Outside a load the deserializers below simply allocate.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer, SeqAccess, Visitor};

#[derive(Default)]
struct Interner {
    strings: HashSet<Arc<str>>,
    lists: HashSet<Arc<[String]>>,
}

thread_local! {
    static INTERNER: RefCell<Option<Interner>> = const { RefCell::new(None) };
}

/// Runs `load` with an interner on this thread: what it deserializes shares repeated strings.
pub fn interning<T>(load: impl FnOnce() -> T) -> T {
    struct Reset(Option<Interner>);
    impl Drop for Reset {
        fn drop(&mut self) {
            INTERNER.with(|i| *i.borrow_mut() = self.0.take());
        }
    }
    let previous = INTERNER.with(|i| i.borrow_mut().replace(Interner::default()));
    let _reset = Reset(previous);
    load()
}

fn intern_str(s: &str) -> Arc<str> {
    INTERNER.with(|i| match i.borrow_mut().as_mut() {
        Some(interner) => match interner.strings.get(s) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Arc<str> = s.into();
                interner.strings.insert(shared.clone());
                shared
            }
        },
        None => s.into(),
    })
}

fn intern_list(list: Vec<String>) -> Arc<[String]> {
    INTERNER.with(|i| match i.borrow_mut().as_mut() {
        Some(interner) => match interner.lists.get(list.as_slice()) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Arc<[String]> = list.into();
                interner.lists.insert(shared.clone());
                shared
            }
        },
        None => list.into(),
    })
}

struct StrVisitor;

impl Visitor<'_> for StrVisitor {
    type Value = Arc<str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Arc<str>, E> {
        Ok(intern_str(s))
    }
}

/// `deserialize_with` for an `Arc<str>` field.
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
    d.deserialize_str(StrVisitor)
}

/// `deserialize_with` for an `Option<Arc<str>>` field (with `#[serde(default)]`).
pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<str>>, D::Error> {
    struct OptionVisitor;
    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<Arc<str>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            string(d).map(Some)
        }
    }
    d.deserialize_option(OptionVisitor)
}

/// `deserialize_with` for an `Arc<[String]>` field: a list of strings.
pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<[String]>, D::Error> {
    struct ListVisitor;
    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Arc<[String]>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of strings")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
            while let Some(item) = seq.next_element::<String>()? {
                items.push(item);
            }
            Ok(intern_list(items))
        }
    }
    d.deserialize_seq(ListVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Row {
        #[serde(deserialize_with = "string")]
        name: Arc<str>,
        #[serde(default, deserialize_with = "optional")]
        id: Option<Arc<str>>,
        #[serde(deserialize_with = "list")]
        names: Arc<[String]>,
    }

    const ROWS: &str = r#"[{"name": "orders-db", "id": "icfg_1", "names": ["A", "B"]},
                           {"name": "orders-db", "id": null, "names": ["A", "B"]}]"#;

    #[test]
    fn a_load_shares_repeated_strings_and_lists() {
        let rows: Vec<Row> = interning(|| serde_json::from_str(ROWS).unwrap());
        assert!(Arc::ptr_eq(&rows[0].name, &rows[1].name));
        assert!(Arc::ptr_eq(&rows[0].names, &rows[1].names));
        assert_eq!(rows[0].id.as_deref(), Some("icfg_1"));
        assert_eq!(rows[1].id, None);
    }

    #[test]
    fn outside_a_load_nothing_is_kept() {
        let rows: Vec<Row> = serde_json::from_str(ROWS).unwrap();
        assert!(!Arc::ptr_eq(&rows[0].name, &rows[1].name));
        assert_eq!(&*rows[1].names, ["A".to_owned(), "B".to_owned()]);
        INTERNER.with(|i| assert!(i.borrow().is_none()));
    }
}
