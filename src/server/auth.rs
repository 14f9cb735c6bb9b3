//! Who may ask for a rotation: Vercel's OIDC bearer token, verified.
//!
//! - The signature, against Vercel's published keys (a JWKS, fetched with the house HTTP
//!   client and cached). The algorithm comes from the key, never from the token: the token's
//!   `alg` must be the key's, and only asymmetric ones exist here (`none` does not parse and
//!   an HMAC key is never loaded, so a token "signed" with HS256 keyed by the public key
//!   fails).
//! - `iss`, `aud` (the integration's client id), `exp` and `nbf`, with [`LEEWAY`] for clock
//!   skew; `exp`, `iss` and `aud` are required.
//! - The claim `installation_id` equals the path's (both kinds of token must carry it: Vercel's
//!   own example skips this check, which lets one installation's token rotate another's
//!   resource); a user token (`user_id` present) needs `user_role` `ADMIN` (USER is
//!   read-only); a system token is accepted.
//!
//! The keys: a kid not in the cache (or keys older than [`KEYS_MAX_AGE`]) fetches them again,
//! but requests fetch at most once per [`REFETCH_INTERVAL`], so a flood of made-up kids cannot
//! hammer Vercel. When the keys cannot be had, requests whose key is not known are refused
//! with 503, not 401: the token may be good, and 503 tells Vercel to try again, where 401
//! would say its credentials are wrong. Known keys stay in use through an outage (for at most
//! [`KEYS_HARD_LIMIT`]); the daemon goes on either way.
//!
//! The token is never logged, never put in an answer and never kept.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use url::Url;

use crate::config::ServerSettings;

/// Clock skew allowed on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(60);
/// Requests fetch the keys at most this often.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// Keys this old are fetched again at the next request (Vercel may have withdrawn one).
pub const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Keys not confirmed for this long are dropped, outage or not.
pub const KEYS_HARD_LIMIT: Duration = Duration::from_secs(24 * 3600);
/// One fetch of the keys may take this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// A JWKS larger than this is not Vercel's.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// A token longer than this is not Vercel's.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a request's token was refused. The messages say what was wrong and never hold the
/// token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token (Authorization: Bearer ...)")]
    Missing,
    #[error("the token is not a JWT this server accepts: {0}")]
    Malformed(String),
    #[error(
        "the token's key {kid:?} is not among Vercel's published keys (fetched at most once a minute)"
    )]
    UnknownKey { kid: String },
    /// Transient: the keys could not be fetched, so the token cannot be checked now.
    #[error("Vercel's signing keys cannot be had now: {0}")]
    KeysUnavailable(String),
    #[error("the token says algorithm {token:?} but its key is for {key:?}")]
    WrongAlgorithm { token: Algorithm, key: Algorithm },
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the token is for installation {token}, not {path}")]
    WrongInstallation { token: String, path: String },
    #[error("the token is a user's with role {role}; only ADMIN may rotate")]
    NotAdmin { role: String },
}

impl AuthError {
    /// 401 (no or bad token), 403 (a good token for something else), 503 (the keys cannot be
    /// had now).
    pub fn status(&self) -> u16 {
        match self {
            AuthError::WrongInstallation { .. } | AuthError::NotAdmin { .. } => 403,
            AuthError::KeysUnavailable(_) => 503,
            _ => 401,
        }
    }
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A person with the ADMIN role in the installation's team.
    User { user_id: String },
    /// Vercel itself.
    System,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::User { user_id } => write!(f, "user {user_id}"),
            Caller::System => f.write_str("system"),
        }
    }
}

/// The claims the checks read beyond those `jsonwebtoken` validates.
#[derive(Debug, Default, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub installation_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub user_role: Option<String>,
}

/// The installation and role checks, once the token is known to be Vercel's and current.
pub fn check_claims(claims: &Claims, path_installation: &str) -> Result<Caller, AuthError> {
    match claims.installation_id.as_deref() {
        Some(id) if id == path_installation => {}
        other => {
            return Err(AuthError::WrongInstallation {
                token: other.map_or_else(|| "(none)".to_owned(), |id| format!("{id:?}")),
                path: format!("{path_installation:?}"),
            });
        }
    }
    match &claims.user_id {
        None => Ok(Caller::System),
        Some(user_id) => match claims.user_role.as_deref() {
            Some("ADMIN") => Ok(Caller::User {
                user_id: user_id.clone(),
            }),
            role => Err(AuthError::NotAdmin {
                role: role.map_or_else(|| "(none)".to_owned(), |r| format!("{r:?}")),
            }),
        },
    }
}

/// A published key this server verifies with, and the one algorithm it is for.
struct PublishedKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, std::sync::Arc<PublishedKey>>,
    /// When they were last fetched successfully.
    fetched_at: Option<Instant>,
    /// When a request last fetched (successfully or not): requests fetch at most once per
    /// [`REFETCH_INTERVAL`].
    request_fetch_at: Option<Instant>,
    /// Why the last fetch failed, while it is the last one.
    failure: Option<String>,
}

/// Verifies Vercel's tokens for one `[server]` config.
pub struct Verifier {
    client_id: String,
    issuer: String,
    jwks_url: Url,
    http: reqwest::Client,
    keys: Mutex<Keys>,
    /// One fetch at a time; a request that waited for another's fetch uses its result.
    fetching: tokio::sync::Mutex<()>,
}

impl Verifier {
    pub fn new(settings: &ServerSettings) -> Result<Verifier, crate::net::ClientError> {
        Ok(Verifier {
            client_id: settings.client_id.clone(),
            issuer: settings.issuer.clone(),
            jwks_url: settings.jwks_url.clone(),
            http: crate::net::client(&settings.jwks_url, FETCH_TIMEOUT)?,
            keys: Mutex::new(Keys::default()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// Fetches the keys once, at start, so the first request need not wait for them. A
    /// failure is logged; requests fetch again.
    pub async fn prefetch(&self) {
        let _turn = self.fetching.lock().await;
        if self.lock().fetched_at.is_none() {
            self.fetch().await;
        }
    }

    /// Verifies the `Authorization` header's value for a request about installation
    /// `path_installation`.
    pub async fn verify(
        &self,
        authorization: Option<&str>,
        path_installation: &str,
    ) -> Result<Caller, AuthError> {
        let token = bearer(authorization)?;
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            AuthError::Malformed(match e.kind() {
                ErrorKind::Json(_) => "its header is not one this server accepts (an unknown or `none` algorithm, or not JSON)".to_owned(),
                _ => format!("it does not decode ({e})"),
            })
        })?;
        if header.alg.family() == AlgorithmFamily::Hmac {
            return Err(AuthError::Malformed(format!(
                "algorithm {:?} is HMAC, which Vercel's public keys never sign with",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| AuthError::Malformed("its header names no key (kid)".to_owned()))?;
        let published = self.key(&kid).await?;
        if published.algorithm != header.alg {
            return Err(AuthError::WrongAlgorithm {
                token: header.alg,
                key: published.algorithm,
            });
        }
        let mut validation = Validation::new(published.algorithm);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_nbf = true;
        validation.set_audience(&[&self.client_id]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Claims>(token, &published.key, &validation)
            .map_err(|e| AuthError::Invalid(describe(e.kind())))?;
        check_claims(&data.claims, path_installation)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Keys> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The published key `kid`, fetching the keys when it is unknown or they are old, at
    /// most once per [`REFETCH_INTERVAL`].
    async fn key(&self, kid: &str) -> Result<std::sync::Arc<PublishedKey>, AuthError> {
        if let Some(key) = self.cached(kid, KEYS_MAX_AGE) {
            return Ok(key);
        }
        {
            let _turn = self.fetching.lock().await;
            // Another request may have fetched while this one waited.
            if let Some(key) = self.cached(kid, KEYS_MAX_AGE) {
                return Ok(key);
            }
            let may_fetch = self
                .lock()
                .request_fetch_at
                .is_none_or(|at| at.elapsed() >= REFETCH_INTERVAL);
            if may_fetch {
                self.lock().request_fetch_at = Some(Instant::now());
                self.fetch().await;
            }
        }
        // Through an outage, a known key stays usable for a while.
        if let Some(key) = self.cached(kid, KEYS_HARD_LIMIT) {
            return Ok(key);
        }
        let keys = self.lock();
        match (&keys.failure, keys.fetched_at) {
            (Some(why), _) => Err(AuthError::KeysUnavailable(why.clone())),
            (None, None) => Err(AuthError::KeysUnavailable(
                "they have not been fetched yet".to_owned(),
            )),
            (None, Some(_)) => Err(AuthError::UnknownKey {
                kid: kid.chars().take(64).collect(),
            }),
        }
    }

    fn cached(&self, kid: &str, max_age: Duration) -> Option<std::sync::Arc<PublishedKey>> {
        let keys = self.lock();
        let fresh = keys.fetched_at.is_some_and(|at| at.elapsed() < max_age);
        fresh.then(|| keys.by_kid.get(kid).cloned()).flatten()
    }

    /// Fetches the keys and replaces the cache with them; a failure keeps the old ones and
    /// is remembered (and logged).
    async fn fetch(&self) {
        match self.download().await {
            Ok(by_kid) => {
                info!(keys = by_kid.len(), url = %self.jwks_url, "fetched Vercel's signing keys");
                let mut keys = self.lock();
                keys.by_kid = by_kid;
                keys.fetched_at = Some(Instant::now());
                keys.failure = None;
            }
            Err(why) => {
                warn!(url = %self.jwks_url, "cannot fetch Vercel's signing keys; rotate requests whose key is not known are answered 503 until they can be: {why}");
                self.lock().failure = Some(why);
            }
        }
    }

    async fn download(&self) -> Result<HashMap<String, std::sync::Arc<PublishedKey>>, String> {
        let mut response = self
            .http
            .get(self.jwks_url.clone())
            .send()
            .await
            .map_err(|e| {
                format!(
                    "the request failed ({})",
                    crate::error::describe_chain(&e.without_url())
                )
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("it answered HTTP {}", status.as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            format!(
                "reading the answer failed ({})",
                crate::error::describe_chain(&e.without_url())
            )
        })? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("the answer is larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body)
    }
}

/// The usable keys of a JWKS document, by kid. A key this server cannot use (no kid, an
/// encryption key, an HMAC secret, an unknown type, an algorithm that does not fit it) is
/// skipped and logged; a document with no usable key at all is an error.
fn parse_jwks(body: &[u8]) -> Result<HashMap<String, std::sync::Arc<PublishedKey>>, String> {
    #[derive(Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not a JWKS ({e})"))?;
    let mut usable = HashMap::new();
    for value in document.keys {
        let jwk: Jwk = match serde_json::from_value(value) {
            Ok(jwk) => jwk,
            Err(e) => {
                debug!("skipped a published key that does not parse: {e}");
                continue;
            }
        };
        let Some(kid) = jwk.common.key_id.clone() else {
            debug!("skipped a published key without a kid");
            continue;
        };
        match published_key(&jwk) {
            Ok(key) => {
                usable.insert(kid, std::sync::Arc::new(key));
            }
            Err(why) => debug!(%kid, "skipped a published key: {why}"),
        }
    }
    if usable.is_empty() {
        return Err("the JWKS holds no key this server can verify with".to_owned());
    }
    Ok(usable)
}

/// The key and its one algorithm: the JWK's `alg` when it has one (asymmetric and fitting
/// the key), else the one its type and curve imply (RSA keys: RS256).
fn published_key(jwk: &Jwk) -> Result<PublishedKey, String> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return Err("not a signing key (use)".to_owned());
    }
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return Err("an elliptic curve this server does not verify with".to_owned()),
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("a shared secret (oct): never accepted".to_owned());
        }
        _ => return Err("a key type this server does not verify with".to_owned()),
    };
    let algorithm = match jwk.common.key_algorithm {
        None => implied,
        Some(alg) => {
            let alg = Algorithm::try_from(alg)
                .map_err(|_| format!("algorithm {alg} is not a signature algorithm"))?;
            // An RSA key serves RS* or PS*; an EC key its curve's ES*; Ed25519 EdDSA.
            let fits = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => alg.family() == AlgorithmFamily::Rsa,
                _ => alg == implied,
            };
            if !fits {
                return Err(format!("algorithm {alg:?} does not fit the key"));
            }
            alg
        }
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable ({e})"))?;
    Ok(PublishedKey { algorithm, key })
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(authorization: Option<&str>) -> Result<&str, AuthError> {
    let value = authorization.ok_or(AuthError::Missing)?.trim();
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed(format!(
            "it is longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    Ok(token)
}

/// What was wrong with a token that decoded, in words (never the token).
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature => "the signature does not verify".to_owned(),
        ErrorKind::ExpiredSignature => "it has expired (exp)".to_owned(),
        ErrorKind::ImmatureSignature => "it is not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidAudience => {
            "it is for another audience (aud is not this integration's client id)".to_owned()
        }
        ErrorKind::InvalidIssuer => "another issuer made it (iss)".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("it has no {claim} claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("its {claim} claim is malformed"),
        ErrorKind::InvalidAlgorithm => "its algorithm does not fit its key".to_owned(),
        ErrorKind::Json(_)
        | ErrorKind::Base64(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidToken => "it does not decode".to_owned(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(installation: Option<&str>, user: Option<&str>, role: Option<&str>) -> Claims {
        Claims {
            installation_id: installation.map(str::to_owned),
            user_id: user.map(str::to_owned),
            user_role: role.map(str::to_owned),
        }
    }

    #[test]
    fn claims_checks_table() {
        let cases: [(Claims, Result<Caller, u16>); 8] = [
            (claims(Some("icfg_a"), None, None), Ok(Caller::System)),
            (
                claims(Some("icfg_a"), Some("u1"), Some("ADMIN")),
                Ok(Caller::User {
                    user_id: "u1".into(),
                }),
            ),
            (claims(Some("icfg_a"), Some("u1"), Some("USER")), Err(403)),
            (claims(Some("icfg_a"), Some("u1"), None), Err(403)),
            (claims(Some("icfg_a"), Some("u1"), Some("admin")), Err(403)),
            (claims(Some("icfg_b"), None, None), Err(403)),
            // A system token without an installation names none: refused, not waved through.
            (claims(None, None, None), Err(403)),
            (claims(Some("icfg_b"), Some("u1"), Some("ADMIN")), Err(403)),
        ];
        for (claims, want) in cases {
            let got = check_claims(&claims, "icfg_a").map_err(|e| e.status());
            assert_eq!(got, want, "{claims:?}");
        }
    }

    #[test]
    fn the_claims_read_json_nulls_as_absent() {
        let c: Claims = serde_json::from_str(
            r#"{"installation_id": "icfg_a", "user_id": null, "user_role": null, "sub": "account:1"}"#,
        )
        .unwrap();
        assert_eq!(check_claims(&c, "icfg_a"), Ok(Caller::System));
    }

    #[test]
    fn bearer_takes_the_token_and_refuses_other_schemes() {
        assert_eq!(bearer(Some("Bearer abc.def.ghi")), Ok("abc.def.ghi"));
        assert_eq!(bearer(Some("bearer  abc ")), Ok("abc"));
        for bad in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer "),
            Some("Basic abc"),
        ] {
            assert_eq!(bearer(bad), Err(AuthError::Missing), "{bad:?}");
        }
    }

    #[test]
    fn jwks_keeps_only_asymmetric_signing_keys_with_a_kid() {
        // A 2048-bit modulus is not needed to parse; any base64url bytes make a key.
        let n = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";
        let body = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "rs", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": n, "e": "AQAB"},
            {"kty": "RSA", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "es-on-rsa", "alg": "ES256", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "hs-on-rsa", "alg": "HS256", "n": n, "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "weird", "kid": "weird"},
        ]});
        let keys = parse_jwks(body.to_string().as_bytes()).unwrap();
        let mut kids: Vec<&str> = keys.keys().map(String::as_str).collect();
        kids.sort();
        assert_eq!(kids, ["ps", "rs"]);
        assert_eq!(keys["rs"].algorithm, Algorithm::RS256);
        assert_eq!(keys["ps"].algorithm, Algorithm::PS256);

        let only_hmac = serde_json::json!({"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]});
        assert!(parse_jwks(only_hmac.to_string().as_bytes()).is_err());
        assert!(parse_jwks(b"<html>").is_err());
    }

    #[test]
    fn statuses_say_who_should_act() {
        assert_eq!(AuthError::Missing.status(), 401);
        assert_eq!(AuthError::KeysUnavailable("x".into()).status(), 503);
        assert_eq!(
            AuthError::NotAdmin {
                role: "USER".into()
            }
            .status(),
            403
        );
    }
}
