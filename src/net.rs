//! How the daemon's HTTP clients are built: one policy for every outgoing HTTP call (the
//! Vercel API, the `http` provider), so a token or a value never takes a route the other
//! client would refuse.
//!
//! - **User-Agent** [`USER_AGENT`], rustls, one timeout per attempt, and **no redirects**
//!   (a redirect would carry the bearer token and the body to another address).
//! - **Proxies only over TLS.** An `http://` URL (the config allows it for loopback only)
//!   never goes through a proxy: a proxy would read the token and the values in clear. A
//!   loopback host (`localhost`, `*.localhost`, 127.0.0.0/8, `::1`) never does either,
//!   whatever its scheme. An `https://` URL elsewhere may go through `HTTPS_PROXY` (else
//!   `ALL_PROXY`; lower-case names too), always as a `CONNECT` tunnel, so TLS runs end to end
//!   between this process and the server and the proxy sees only the host name; `NO_PROXY`
//!   is honoured. `HTTP_PROXY` is never read.
//!
//! This module is low: it imports nothing of the crate, so every client can use it.

use std::time::Duration;

use url::{Host, Url};

/// Sent with every request, so Vercel (and a partner reading its logs) can tell who called.
pub const USER_AGENT: &str = concat!("vercel-secret-rotator/", env!("CARGO_PKG_VERSION"));

/// Proxy variables read for an `https://` URL, in order: the first one set (and not empty)
/// wins. `HTTP_PROXY` is deliberately absent: it is for plain-HTTP traffic, which is never
/// proxied here.
const PROXY_VARS: [&str; 4] = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"];

/// Hosts that never go through a proxy, on top of `NO_PROXY`, in its syntax. Checked by
/// reqwest for each request, so the rule holds for any URL the client is given.
const LOOPBACK_NO_PROXY: &str = "localhost,127.0.0.0/8,::1";

/// Why a client could not be built. Never holds a proxy URL: it may carry a password.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A proxy variable that applies to this URL is not an `http://` or `https://` URL.
    #[error(
        "the proxy in ${var} cannot be used: {reason} (only http:// and https:// proxies are \
         supported; unset it or list the host in NO_PROXY)"
    )]
    Proxy {
        var: &'static str,
        reason: &'static str,
    },
    /// reqwest could not build the client (TLS set-up).
    #[error("reqwest could not build the client")]
    Build(#[source] reqwest::Error),
}

/// The proxy a client for `target` goes through, if any: the variable it came from, the
/// proxy's URL, and the `NO_PROXY` list to hand reqwest (the environment's plus loopback).
#[derive(Debug, PartialEq, Eq)]
struct ProxyChoice {
    var: &'static str,
    proxy: Url,
    no_proxy: String,
}

/// Builds a client for calls to `target` (its scheme and host decide the proxy), with
/// `timeout` per request (connect, send and read, body included).
pub fn client(target: &Url, timeout: Duration) -> Result<reqwest::Client, ClientError> {
    // Without a proxy reqwest would fall back on its system proxies (HTTP_PROXY included):
    // `no_proxy()` turns that off; `proxy()` turns it off as well.
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(timeout)
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if let Some(choice) = choose_proxy(target, |name| std::env::var(name).ok())? {
        // `Proxy::https` intercepts https:// requests only; reqwest tunnels them (CONNECT).
        let proxy = reqwest::Proxy::https(choice.proxy)
            .map_err(|_| ClientError::Proxy {
                var: choice.var,
                reason: "reqwest refused it",
            })?
            .no_proxy(reqwest::NoProxy::from_string(&choice.no_proxy));
        builder = builder.proxy(proxy);
    }
    builder.build().map_err(ClientError::Build)
}

/// The proxy policy of the module doc, over an environment given as a lookup (tests pass a
/// table).
fn choose_proxy(
    target: &Url,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<ProxyChoice>, ClientError> {
    if target.scheme() != "https" || target.host().is_none_or(|h| is_loopback(&h)) {
        return Ok(None);
    }
    let Some((var, raw)) = PROXY_VARS.iter().find_map(|var| {
        env(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .map(|v| (*var, v))
    }) else {
        return Ok(None);
    };
    // As curl: a proxy without a scheme is an http:// one.
    let raw = if raw.contains("://") {
        raw
    } else {
        format!("http://{raw}")
    };
    let proxy = Url::parse(&raw).map_err(|_| ClientError::Proxy {
        var,
        reason: "not a URL",
    })?;
    if !matches!(proxy.scheme(), "http" | "https") {
        return Err(ClientError::Proxy {
            var,
            reason: "unsupported scheme",
        });
    }
    if proxy.host().is_none() {
        return Err(ClientError::Proxy {
            var,
            reason: "no host",
        });
    }
    let no_proxy = match ["NO_PROXY", "no_proxy"].iter().find_map(|v| env(v)) {
        Some(list) if !list.trim().is_empty() => format!("{list},{LOOPBACK_NO_PROXY}"),
        _ => LOOPBACK_NO_PROXY.to_owned(),
    };
    Ok(Some(ProxyChoice {
        var,
        proxy,
        no_proxy,
    }))
}

/// Whether `host` is this machine's loopback: traffic to it never leaves the host, so a
/// proxy could only be a detour that reads it.
fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choose(target: &str, env: &[(&str, &str)]) -> Result<Option<ProxyChoice>, ClientError> {
        let target = Url::parse(target).expect("url");
        choose_proxy(&target, |name| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    const ALL_SET: [(&str, &str); 6] = [
        ("HTTP_PROXY", "http://proxy.corp:3128"),
        ("http_proxy", "http://proxy.corp:3128"),
        ("HTTPS_PROXY", "http://secure-proxy.corp:3128"),
        ("https_proxy", "http://secure-proxy.corp:3128"),
        ("ALL_PROXY", "http://all-proxy.corp:3128"),
        ("all_proxy", "http://all-proxy.corp:3128"),
    ];

    #[test]
    fn plain_http_and_loopback_never_use_a_proxy() {
        for target in [
            "http://127.0.0.1:8080",
            "http://[::1]:8080",
            "http://localhost:9",
            "http://api.example.com", // refused by the config; never proxied anyway
            "https://127.0.0.1:8443",
            "https://127.8.9.10",
            "https://[::1]",
            "https://[::ffff:127.0.0.1]",
            "https://localhost",
            "https://LOCALHOST.",
            "https://api.localhost",
        ] {
            assert_eq!(
                choose(target, &ALL_SET).expect("no error"),
                None,
                "{target}"
            );
        }
    }

    #[test]
    fn https_uses_https_proxy_then_all_proxy_never_http_proxy() {
        let choice = |env: &[(&str, &str)]| {
            choose("https://api.vercel.com", env)
                .expect("no error")
                .map(|c| (c.var, c.proxy.to_string()))
        };
        assert_eq!(
            choice(&ALL_SET),
            Some(("HTTPS_PROXY", "http://secure-proxy.corp:3128/".to_owned()))
        );
        assert_eq!(
            choice(&ALL_SET[4..]),
            Some(("ALL_PROXY", "http://all-proxy.corp:3128/".to_owned()))
        );
        assert_eq!(choice(&ALL_SET[..2]), None, "HTTP_PROXY is never read");
        assert_eq!(choice(&[("HTTPS_PROXY", "  ")]), None, "empty is unset");
        assert_eq!(
            choice(&[("https_proxy", "proxy.corp:3128")]),
            Some(("https_proxy", "http://proxy.corp:3128/".to_owned())),
            "no scheme means http://, as curl"
        );
    }

    #[test]
    fn no_proxy_is_passed_on_with_loopback_added() {
        let c = choose(
            "https://api.vercel.com",
            &[("HTTPS_PROXY", "http://p:1"), ("no_proxy", "internal.acme")],
        )
        .expect("no error")
        .expect("a proxy");
        assert_eq!(c.no_proxy, format!("internal.acme,{LOOPBACK_NO_PROXY}"));
        let c = choose("https://api.vercel.com", &[("HTTPS_PROXY", "http://p:1")])
            .expect("no error")
            .expect("a proxy");
        assert_eq!(c.no_proxy, LOOPBACK_NO_PROXY);
    }

    #[test]
    fn an_unusable_proxy_is_an_error_that_does_not_echo_it() {
        for (value, reason) in [
            ("socks5://user:pw-CANARY@p:1080", "unsupported scheme"),
            ("http://user:pw-CANARY@", "not a URL"),
        ] {
            let err =
                choose("https://api.vercel.com", &[("ALL_PROXY", value)]).expect_err("refused");
            let text = err.to_string();
            assert!(
                text.contains("$ALL_PROXY") && text.contains(reason),
                "{text}"
            );
            assert!(!text.contains("CANARY"), "{text}");
        }
    }

    #[test]
    fn clients_build_with_and_without_a_proxy() {
        let timeout = Duration::from_secs(1);
        client(&Url::parse("http://127.0.0.1:1").expect("url"), timeout).expect("client");
        client(&Url::parse("https://api.vercel.com").expect("url"), timeout).expect("client");
    }

    #[test]
    fn user_agent_names_the_crate_and_version() {
        assert_eq!(
            USER_AGENT,
            format!("vercel-secret-rotator/{}", env!("CARGO_PKG_VERSION"))
        );
    }
}
