//! A test issuer of Vercel-style OIDC tokens: RSA keys made in the test, a JWKS served on
//! `127.0.0.1:0`, and tokens signed (or forged) with them.
//!
//! The JWKS server counts its fetches, can be told to fail (503), and publishes the keys it
//! is given ([`Issuer::publish`]), so a test can add a key after the daemon started.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64_engine::b64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::EncodePublicKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

pub const ISSUER: &str = "https://marketplace.vercel.test";
pub const CLIENT_ID: &str = "oac_TESTCLIENT";

/// One RSA key pair of the issuer, with its kid.
pub struct Key {
    pub kid: String,
    /// The JWK of its public half, as a JWKS lists it (no `alg`: taken as RS256).
    pub jwk: Value,
    /// PKCS#1 DER of the private key, for signing.
    der: Vec<u8>,
    /// The public key's SubjectPublicKeyInfo DER: what an attacker would use as an HMAC
    /// secret.
    pub public_der: Vec<u8>,
}

impl Key {
    fn make(kid: &str) -> Key {
        let private = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048)
            .unwrap_or_else(|e| panic!("cannot make an RSA key: {e}"));
        let public = private.to_public_key();
        let jwk = json!({
            "kty": "RSA",
            "use": "sig",
            "kid": kid,
            "n": b64(&public.n_bytes()),
            "e": b64(&public.e_bytes()),
        });
        Key {
            kid: kid.to_owned(),
            jwk,
            der: private
                .to_pkcs1_der()
                .unwrap_or_else(|e| panic!("{e}"))
                .as_bytes()
                .to_vec(),
            public_der: public
                .to_public_key_der()
                .unwrap_or_else(|e| panic!("{e}"))
                .as_bytes()
                .to_vec(),
        }
    }

    /// `claims` signed RS256 with this key, its kid in the header.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    /// `claims` signed RS256 with this key, `kid` in the header (another key's, to forge).
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(&self.der))
            .unwrap_or_else(|e| panic!("cannot sign: {e}"))
    }
}

/// The keys every test shares: making RSA keys takes a moment, so each is made once.
pub fn keys() -> &'static [Key; 3] {
    static KEYS: OnceLock<[Key; 3]> = OnceLock::new();
    KEYS.get_or_init(|| [Key::make("key-a"), Key::make("key-b"), Key::make("key-c")])
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The claims of a valid system token for `installation_id`.
pub fn system_claims(installation_id: &str) -> Value {
    json!({
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "sub": "account:0123abcd",
        "account_id": "team_0123",
        "installation_id": installation_id,
        "type": "system",
        "iat": now(),
        "nbf": now() - 5,
        "exp": now() + 300,
    })
}

/// The claims of a valid user token for `installation_id` with `role`.
pub fn user_claims(installation_id: &str, role: &str) -> Value {
    let mut claims = system_claims(installation_id);
    claims["sub"] = json!("account:0123abcd:user:4567ef");
    claims["user_id"] = json!("user_4567");
    claims["user_role"] = json!(role);
    claims["user_email"] = json!("admin@example.com");
    claims["type"] = json!("user");
    claims
}

/// A token whose header says `alg` (no signature check would pass it: the signature part is
/// whatever `signature` is), for `none` and other forgeries.
pub fn unsigned(alg: &str, kid: &str, claims: &Value, signature: &str) -> String {
    let header = json!({"alg": alg, "typ": "JWT", "kid": kid});
    format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// HS256 over `claims`, keyed with `secret`, with `kid` in the header: the "public key as
/// HMAC secret" forgery.
pub fn hmac(secret: &[u8], kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("cannot sign: {e}"))
}

struct Shared {
    published: Mutex<Vec<Value>>,
    fetches: AtomicUsize,
    failing: AtomicBool,
}

/// The issuer's JWKS endpoint. Stops with the test's runtime.
pub struct Issuer {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Issuer {
    /// Serves a JWKS listing `published` on `127.0.0.1:0`.
    pub async fn start(published: &[&Key]) -> Issuer {
        let shared = Arc::new(Shared {
            published: Mutex::new(published.iter().map(|k| k.jwk.clone()).collect()),
            fetches: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("issuer: bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("issuer: {e}"));
        let app = Router::new()
            .route("/.well-known/jwks", get(jwks))
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Issuer { addr, shared }
    }

    pub fn jwks_url(&self) -> String {
        format!("http://{}/.well-known/jwks", self.addr)
    }

    /// Publishes exactly these keys from now on.
    pub fn publish(&self, keys: &[&Key]) {
        *self
            .shared
            .published
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    /// Answers 503 from now on (or again normally).
    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }

    /// How many times the JWKS was asked for.
    pub fn fetches(&self) -> usize {
        self.shared.fetches.load(Ordering::SeqCst)
    }
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    shared.fetches.fetch_add(1, Ordering::SeqCst);
    if shared.failing.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    let keys = shared
        .published
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    axum::Json(json!({"keys": keys})).into_response()
}

/// Unpadded base64url, as JOSE writes it.
mod base64_engine {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub fn b64(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    }
}
