//! Garbage in, clear errors out: config loading on arbitrary input never panics, and every
//! refusal says where. Property tests with proptest, brief by default (CI); run them long
//! with `PROPTEST_CASES=200000 cargo test --release --test integration config_fuzz`.

use std::path::Path;

use proptest::prelude::*;
use vercel_secret_rotator::config::{self, ConfigError};

use crate::common::cli;

fn example() -> String {
    std::fs::read_to_string(cli::root().join("config/example.toml")).unwrap_or_default()
}

/// Every refusal is an `Invalid` with at least one problem, and its message names the file.
fn check_outcome(text: &str) {
    match config::parse(Path::new("fuzz.toml"), text) {
        Ok(_) => {}
        Err(e @ ConfigError::Invalid { .. }) => {
            assert!(!e.problems().is_empty());
            let message = e.to_string();
            assert!(message.contains("fuzz.toml"), "{message}");
            for p in e.problems() {
                if let Some(line) = p.line {
                    assert!(
                        line >= 1 && line <= text.lines().count().max(1) + 1,
                        "line {line} out of range"
                    );
                }
            }
        }
        Err(e) => panic!("parse of text gave a read error: {e}"),
    }
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        check_outcome(&text);
    }

    #[test]
    fn arbitrary_toml_shaped_text_never_panics(
        lines in prop::collection::vec(
            prop_oneof![
                "\\[[a-z.\\-\\[\\]]{0,20}\\]",
                "[a-z\\-]{1,16} = \"[^\"\\n]{0,30}\"",
                "[a-z\\-]{1,16} = [0-9\\-]{1,6}",
                "[a-z\\-]{1,16} = \\[\"[a-z_]{0,8}\"(, \"[a-z_]{0,8}\"){0,3}\\]",
                "[a-z\\-]{1,16} = \\{ kind = \"(random|command|http|postgres|mysql|redis|x)\" \\}",
            ],
            0..30,
        )
    ) {
        check_outcome(&lines.join("\n"));
    }

    /// The shipped example with random bytes changed, removed or inserted.
    #[test]
    fn mutated_example_never_panics(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<char>()), 1..8)
    ) {
        let mut chars: Vec<char> = example().chars().collect();
        for (at, op, c) in edits {
            if chars.is_empty() { break; }
            let i = at.index(chars.len());
            match op {
                0 => chars[i] = c,
                1 => { chars.remove(i); }
                _ => chars.insert(i, c),
            }
        }
        check_outcome(&chars.into_iter().collect::<String>());
    }
}

#[test]
fn the_example_itself_parses() {
    let config = config::parse(Path::new("config/example.toml"), &example());
    assert!(config.is_ok(), "{:?}", config.err().map(|e| e.to_string()));
}
