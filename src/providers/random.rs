//! The `random` provider: a password drawn from the OS CSPRNG, with an optional `apply`
//! program that makes the backend accept it before it is pushed.
//!
//! The value is `length` characters of the configured charset, each drawn uniformly (no
//! modulo bias) from the operating system's random source, and lives only in a
//! `SecretString`. Its one field is `password`; its handle is the `rotation_id`, which names
//! the rotation and says nothing about the value.
//!
//! `apply` runs with DESIGN's protocol (see `process.rs`): the request is
//! `{"action":"apply","rotation_id","policy","resource","fields":{"password":...}}` on stdin,
//! and exit 0 means the backend now accepts the value. Any failure, including exit 3 ("I do not
//! know `apply`"), fails `create`: a value the backend was never given must not be pushed.

use async_trait::async_trait;
use rand::distr::{Distribution, Uniform};
use rand::rngs::OsRng;
use rand::{RngCore, TryRngCore};
use serde::Serialize;

use super::process::{self, Exposed, Invocation, Required, SecretBuf};
use super::{Credential, Provider, ProviderError, Target};
use crate::config::{Charset, RandomConfig};
use crate::secret::{Fields, SecretString};

/// The one field this provider yields.
const FIELD: &str = "password";

#[derive(Debug, Clone)]
pub struct RandomProvider {
    config: RandomConfig,
}

impl RandomProvider {
    pub fn new(config: RandomConfig) -> Self {
        RandomProvider { config }
    }
}

#[derive(Serialize)]
struct ApplyRequest<'a> {
    action: &'static str,
    rotation_id: &'a str,
    policy: &'a str,
    resource: &'a str,
    fields: ApplyFields<'a>,
}

#[derive(Serialize)]
struct ApplyFields<'a> {
    password: Exposed<'a>,
}

#[async_trait]
impl Provider for RandomProvider {
    fn kind(&self) -> &'static str {
        "random"
    }

    async fn create(
        &self,
        target: &Target,
        rotation_id: &str,
        _previous_handle: Option<&str>,
    ) -> Result<Credential, ProviderError> {
        let password = generate(self.config.length, self.config.charset)?;

        if let Some(spec) = &self.config.apply {
            const ACTION: &str = "apply";
            let request = SecretBuf::json(&ApplyRequest {
                action: ACTION,
                rotation_id,
                policy: &target.policy,
                resource: &target.resource,
                fields: ApplyFields {
                    password: Exposed(&password),
                },
            })
            .map_err(|e| ProviderError::Io {
                program: spec.display_name(),
                action: ACTION,
                source: std::io::Error::other(format!(
                    "could not encode the request ({:?})",
                    e.classify()
                )),
            })?;
            let invocation = Invocation {
                spec,
                action: ACTION,
                timeout: self.config.apply_timeout,
                required: Required::Yes(
                    "the program does not implement `apply`, so the new value was not applied",
                ),
            };
            // Exit 0 is all `apply` has to say; what it prints is not looked at.
            invocation.call(&request, &[&password], |_| Ok(())).await?;
        }

        let mut fields = Fields::new();
        fields.insert(FIELD.to_owned(), password);
        Ok(Credential {
            handle: rotation_id.to_owned(),
            fields,
            supersedes: None,
        })
    }

    /// The `apply` program, if any, can be run: a rotation would otherwise fail at its first
    /// `create`. Nothing is run.
    async fn preflight(&self) -> Result<Vec<String>, ProviderError> {
        let Some(spec) = &self.config.apply else {
            return Ok(Vec::new());
        };
        let found = process::resolve_program(&spec.program).map_err(|reason| {
            ProviderError::ProgramUnusable {
                key: "provider.apply",
                reason,
            }
        })?;
        Ok(vec![format!(
            "apply program {} is executable",
            found.display()
        )])
    }
}

/// Draws `length` characters of `charset` from the OS random source.
///
/// Unbiased: `Uniform` over the alphabet's indices samples by rejection (random words that
/// fall in the incomplete last "zone" above the largest multiple of the alphabet size are
/// thrown away and redrawn), so every index is exactly equally likely. `byte % len` would
/// favour the first `256 % len` characters.
pub(crate) fn generate(length: usize, charset: Charset) -> Result<SecretString, ProviderError> {
    let alphabet = charset.alphabet();
    let index = Uniform::new(0, alphabet.len())
        .map_err(|e| ProviderError::Random(format!("empty alphabet: {e}")))?;
    let mut rng = CheckedOsRng::default();
    // Sized up front and ASCII only, so the String never reallocates (no stale copy left in
    // freed memory) and `into_boxed_str` inside `SecretString::from` does not either.
    let mut value = String::with_capacity(length);
    for _ in 0..length {
        value.push(char::from(alphabet[index.sample(&mut rng)]));
    }
    let value = SecretString::from(value);
    match rng.failure {
        None => Ok(value),
        // `value` is zeroized as it drops: it was drawn from a failing source.
        Some(e) => Err(ProviderError::Random(e.to_string())),
    }
}

/// `OsRng` as an infallible `RngCore` that remembers the first failure instead of panicking
/// (`OsRng.unwrap_err()` would take the daemon down on a failed `getrandom`). After a failure
/// it returns a counter, which only keeps the rejection loop moving: the result is discarded.
#[derive(Default)]
struct CheckedOsRng {
    failure: Option<rand::rand_core::OsError>,
    fallback: u64,
}

impl CheckedOsRng {
    fn fail(&mut self, e: rand::rand_core::OsError) -> u64 {
        self.failure.get_or_insert(e);
        self.fallback = self.fallback.wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.fallback
    }
}

impl RngCore for CheckedOsRng {
    fn next_u32(&mut self) -> u32 {
        match OsRng.try_next_u32() {
            Ok(v) => v,
            Err(e) => self.fail(e) as u32,
        }
    }

    fn next_u64(&mut self) -> u64 {
        match OsRng.try_next_u64() {
            Ok(v) => v,
            Err(e) => self.fail(e),
        }
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        if let Err(e) = OsRng.try_fill_bytes(dest) {
            self.fail(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::ExposeSecret;

    const ALL: [Charset; 4] = [
        Charset::Alphanumeric,
        Charset::Hex,
        Charset::Base64Url,
        Charset::AsciiPrintable,
    ];

    #[test]
    fn values_have_the_exact_length_and_only_the_charsets_characters() {
        for charset in ALL {
            for length in [1, 16, 40, 257] {
                let value = generate(length, charset).unwrap();
                let value = value.expose_secret();
                assert_eq!(value.len(), length, "{charset:?}");
                assert!(
                    value.bytes().all(|b| charset.alphabet().contains(&b)),
                    "{charset:?}: a character outside the alphabet"
                );
            }
        }
    }

    /// Pearson's chi-squared statistic of `counts` (indexed by byte) over `alphabet`, against
    /// `expected` draws per symbol, and the bound a fair source stays under: the statistic
    /// has mean `k - 1` and standard deviation `sqrt(2(k - 1))`, and the bound is ten standard
    /// deviations out, so a fair source essentially never trips it.
    fn chi_squared(counts: &[u32; 256], alphabet: &[u8], expected: f64) -> (f64, f64) {
        let chi2 = alphabet
            .iter()
            .map(|&b| {
                let d = f64::from(counts[usize::from(b)]) - expected;
                d * d / expected
            })
            .sum();
        let df = (alphabet.len() - 1) as f64;
        (chi2, df + 10.0 * (2.0 * df).sqrt())
    }

    #[test]
    fn every_symbol_is_drawn_about_equally_often() {
        for charset in ALL {
            let alphabet = charset.alphabet();
            let value = generate(alphabet.len() * 1000, charset).unwrap();
            let mut counts = [0u32; 256];
            for b in value.expose_secret().bytes() {
                counts[usize::from(b)] += 1;
            }
            assert!(
                alphabet.iter().all(|&b| counts[usize::from(b)] > 0),
                "{charset:?}: a symbol never appeared"
            );
            let (chi2, bound) = chi_squared(&counts, alphabet, 1000.0);
            assert!(
                chi2 < bound,
                "{charset:?}: chi-squared {chi2:.1} >= {bound:.1}"
            );
        }
    }

    /// The check above has teeth: the exact distribution of `byte % 62` (the first 8
    /// symbols 25% too likely) is far past its bound.
    #[test]
    fn the_uniformity_check_rejects_modulo_bias() {
        let alphabet = Charset::Alphanumeric.alphabet();
        let draws = alphabet.len() * 1000;
        let mut counts = [0u32; 256];
        for i in 0..draws {
            counts[usize::from(alphabet[(i % 256) % alphabet.len()])] += 1;
        }
        let (chi2, bound) = chi_squared(&counts, alphabet, 1000.0);
        assert!(
            chi2 > 2.0 * bound,
            "chi-squared {chi2:.1} vs bound {bound:.1}"
        );
    }

    #[test]
    fn two_values_differ() {
        let a = generate(40, Charset::Alphanumeric).unwrap();
        let b = generate(40, Charset::Alphanumeric).unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[tokio::test]
    async fn create_without_apply_yields_a_password_and_the_rotation_id_as_handle() {
        let provider = RandomProvider::new(RandomConfig {
            length: 32,
            charset: Charset::Hex,
            apply: None,
            apply_timeout: std::time::Duration::from_secs(5),
        });
        let target = Target {
            policy: "p".into(),
            installation: "i".into(),
            resource: "r".into(),
            installation_id: "icfg_test".into(),
            resource_info: None,
        };
        let credential = provider.create(&target, "rot-1", None).await.unwrap();
        assert_eq!(credential.handle, "rot-1");
        assert_eq!(credential.supersedes, None);
        assert!(!provider.alternates());
        assert_eq!(credential.fields.keys().collect::<Vec<_>>(), ["password"]);
        assert_eq!(credential.fields["password"].expose_secret().len(), 32);
        assert_eq!(provider.kind(), "random");
    }
}
