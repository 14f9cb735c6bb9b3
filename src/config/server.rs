//! `[server]`: the one HTTP listener (Vercel's rotate requests, `/metrics`, `/healthz`):
//! where it listens, and what Vercel's tokens must say to be accepted (audience, issuer, and
//! where the keys that sign them are published).

use std::net::SocketAddr;

use toml::Spanned;
use url::Url;

use super::raw::RawServer;
use super::types::ServerSettings;
use super::validate::{Validator, is_loopback};

/// Where Vercel publishes the keys of its Marketplace tokens (VERCEL_API.md).
pub const DEFAULT_JWKS_URL: &str = "https://marketplace.vercel.com/.well-known/jwks";
/// The `iss` of Vercel's Marketplace tokens.
pub const DEFAULT_ISSUER: &str = "https://marketplace.vercel.com";

pub(super) fn validate(v: &mut Validator, raw: &Spanned<RawServer>) -> Option<ServerSettings> {
    let before = v.problems.len();
    let raw = raw.get_ref();
    let listen = match raw.listen.get_ref().trim().parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            v.problem(
                Some(raw.listen.span()),
                "server.listen",
                format!(
                    "\"{}\" is not a socket address: write an IP address and a port, e.g. \"127.0.0.1:9464\" or \"[::1]:9464\"",
                    raw.listen.get_ref()
                ),
            );
            None
        }
    };
    let client_id = raw.client_id.get_ref().trim().to_owned();
    if client_id.is_empty()
        || client_id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        v.problem(
            Some(raw.client_id.span()),
            "server.client-id",
            "must be the integration's client id (oac_...), without spaces: Vercel's tokens name it as their audience",
        );
    }
    let jwks_url = match &raw.jwks_url {
        None => Url::parse(DEFAULT_JWKS_URL).ok(),
        Some(text) => match check_jwks_url(text.get_ref()) {
            Ok(url) => Some(url),
            Err(why) => {
                v.problem(Some(text.span()), "server.jwks-url", why);
                None
            }
        },
    };
    let issuer = match &raw.issuer {
        None => DEFAULT_ISSUER.to_owned(),
        Some(text) if text.get_ref().trim().is_empty() => {
            v.problem(
                Some(text.span()),
                "server.issuer",
                "is empty: leave it out for Vercel's own (https://marketplace.vercel.com)",
            );
            String::new()
        }
        Some(text) => text.get_ref().trim().to_owned(),
    };
    if v.problems.len() > before {
        return None;
    }
    Some(ServerSettings {
        listen: listen?,
        client_id,
        jwks_url: jwks_url?,
        issuer,
    })
}

/// The keys decide which tokens are believed: fetched over https, or plain http only from
/// this machine (a test issuer), never through a redirect (`net::client`).
fn check_jwks_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("\"{text}\" is not a URL ({e})"))?;
    if url.host_str().unwrap_or("").is_empty() {
        return Err(format!("\"{text}\" has no host"));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(format!(
            "\"{text}\" is plain http to a host that is not loopback: whoever sits on the path could publish keys and forge Vercel's requests; use https"
        )),
        other => Err(format!("\"{text}\" has scheme {other}: use https")),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::parse;

    fn server(section: &str) -> Result<crate::config::ServerSettings, String> {
        let text = format!("[server]\n{section}\n");
        parse(Path::new("server.toml"), &text)
            .map(|c| c.server.unwrap_or_else(|| panic!("no server: {text}")))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_vercels_issuer_and_keys() {
        let s = server("listen = \"127.0.0.1:9464\"\nclient-id = \"oac_abc\"").unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:9464");
        assert_eq!(s.client_id, "oac_abc");
        assert_eq!(s.issuer, "https://marketplace.vercel.com");
        assert_eq!(
            s.jwks_url.as_str(),
            "https://marketplace.vercel.com/.well-known/jwks"
        );
    }

    #[test]
    fn a_config_without_server_listens_nowhere() {
        let config = parse(Path::new("x.toml"), "").unwrap();
        assert!(config.server.is_none());
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        let cases = [
            (
                "listen = \"localhost:9464\"\nclient-id = \"oac_a\"",
                "server.listen",
            ),
            (
                "listen = \"127.0.0.1\"\nclient-id = \"oac_a\"",
                "server.listen",
            ),
            (
                "listen = \"127.0.0.1:1\"\nclient-id = \" \"",
                "server.client-id",
            ),
            (
                "listen = \"127.0.0.1:1\"\nclient-id = \"oac_a\"\njwks-url = \"http://keys.example.com/jwks\"",
                "server.jwks-url",
            ),
            (
                "listen = \"127.0.0.1:1\"\nclient-id = \"oac_a\"\njwks-url = \"ftp://keys.example.com/jwks\"",
                "server.jwks-url",
            ),
            (
                "listen = \"127.0.0.1:1\"\nclient-id = \"oac_a\"\nissuer = \"\"",
                "server.issuer",
            ),
            ("listen = \"127.0.0.1:1\"", "missing field `client-id`"),
            (
                "listen = \"127.0.0.1:1\"\nclient-id = \"oac_a\"\nclient-secret = \"x\"",
                "unknown field `client-secret`",
            ),
        ];
        for (section, want) in cases {
            let err = server(section).expect_err(section);
            assert!(err.contains(want), "{section}: {err}");
            assert!(err.contains("server.toml:"), "names the file: {err}");
        }
    }

    #[test]
    fn a_loopback_http_jwks_url_is_accepted_for_a_local_issuer() {
        let s = server(
            "listen = \"[::1]:0\"\nclient-id = \"oac_a\"\njwks-url = \"http://127.0.0.1:8080/jwks\"\nissuer = \"https://issuer.test\"",
        )
        .unwrap();
        assert_eq!(s.jwks_url.as_str(), "http://127.0.0.1:8080/jwks");
        assert_eq!(s.issuer, "https://issuer.test");
        assert_eq!(s.listen.port(), 0);
    }
}
