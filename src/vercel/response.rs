//! Reading what Vercel answered when it was not a success: the error body (capped, never
//! trusted to parse), the server's message made safe to show, and when to try again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Response;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use secrecy::SecretString;
use serde_json::Value;

use super::limiter::RateWindow;

/// At most this much of an error body is read. Vercel's error bodies are a few hundred bytes;
/// a proxy's HTML page or a misbehaving server must not make the daemon buffer megabytes.
pub(crate) const ERROR_BODY_CAP: usize = 64 * 1024;

/// Longest server message kept in an error, in characters: enough for any real message, short
/// enough that a log line stays a line.
pub(crate) const MESSAGE_CAP: usize = 500;
/// Longest `error.code` kept: real codes are short identifiers.
pub(crate) const CODE_CAP: usize = 100;

/// Reads at most `cap` bytes of the body, then stops (the rest is never received; the
/// connection is dropped with the response). A read error ends the body: the status alone
/// already says what happened.
pub(crate) async fn read_capped(response: &mut Response, cap: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < cap {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = cap - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// What an error body said, when it was `{"error":{...}}`.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ErrorBody {
    pub(crate) code: Option<String>,
    pub(crate) message: Option<String>,
    /// `error.limit.resetMs`, else `error.limit.reset` * 1000: when the rate limit window
    /// ends, in milliseconds since the Unix epoch.
    pub(crate) reset_ms: Option<f64>,
}

/// Parses Vercel's error shape; anything else (empty, HTML, truncated, other JSON) gives an
/// empty [`ErrorBody`].
pub(crate) fn parse_error_body(body: &[u8]) -> ErrorBody {
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return ErrorBody::default();
    };
    let Some(error) = json.get("error") else {
        return ErrorBody::default();
    };
    let text = |key: &str| error.get(key).and_then(Value::as_str).map(str::to_owned);
    let limit = error.get("limit");
    let number = |key: &str| {
        limit
            .and_then(|l| l.get(key))
            .and_then(Value::as_f64)
            .filter(|n| n.is_finite() && *n >= 0.0)
    };
    ErrorBody {
        code: text("code"),
        message: text("message"),
        reset_ms: number("resetMs").or_else(|| number("reset").map(|s| s * 1000.0)),
    }
}

/// Makes text from the server safe for an error message and a log line: every pushed value
/// and the token replaced by `[REDACTED]` (in case the server echoes one), control characters
/// (newlines included, which could forge log lines) replaced by spaces, cut to `cap`
/// characters. Scrubbing comes first so a cut cannot leave half a value behind.
pub(crate) fn sanitize<'a>(
    text: &str,
    secrets: impl IntoIterator<Item = &'a SecretString>,
    cap: usize,
) -> String {
    let scrubbed = crate::secret::scrub(text, secrets);
    let mut out: String = scrubbed
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(cap)
        .collect();
    if scrubbed.chars().nth(cap).is_some() {
        out.push('…');
    }
    out
}

/// When to try again, from what the server said, in order of precedence:
/// `Retry-After` (any status: 503 uses it too); then, for a 429 only, the body's
/// `error.limit.resetMs`/`reset` and the `X-RateLimit-Reset` header (Unix seconds), which
/// describe the rate-limit window and mean nothing for other statuses.
pub(crate) fn retry_after(
    status: u16,
    headers: &HeaderMap,
    body: &ErrorBody,
    now: SystemTime,
) -> Option<Duration> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(wait) = header(RETRY_AFTER.as_str()).and_then(|v| parse_retry_after(v, now)) {
        return Some(wait);
    }
    if status != 429 {
        return None;
    }
    if let Some(ms) = body.reset_ms {
        return Some(until_epoch_ms(ms, now));
    }
    header("x-ratelimit-reset")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| until_epoch_ms(secs as f64 * 1000.0, now))
}

/// The rate-limit window an answer describes, from `X-RateLimit-Remaining` and
/// `X-RateLimit-Reset` (Unix seconds; both needed) and `X-RateLimit-Limit` (optional). `None`
/// when they are missing or not numbers: pacing then stays as it was.
pub(crate) fn rate_window(headers: &HeaderMap, now: SystemTime) -> Option<RateWindow> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let remaining = number("x-ratelimit-remaining")?;
    let reset = number("x-ratelimit-reset")?;
    Some(RateWindow {
        limit: number("x-ratelimit-limit"),
        remaining,
        reset_in: until_epoch_ms(reset as f64 * 1000.0, now),
    })
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP-date (IMF-fixdate, and the obsolete
/// RFC 850 and asctime forms that RFC 9110 says a recipient must accept; the `httpdate`
/// crate reads all three). A date in the past means "now" (zero). `None` for anything else.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is still "a very long time", not garbage.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Time from `now` until an instant given in milliseconds since the Unix epoch; zero if it
/// has passed.
fn until_epoch_ms(at_ms: f64, now: SystemTime) -> Duration {
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    let wait_ms = at_ms - now_ms;
    if wait_ms.is_finite() && wait_ms > 0.0 {
        Duration::try_from_secs_f64(wait_ms / 1000.0).unwrap_or(Duration::MAX)
    } else {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    /// 1994-11-06T08:49:00Z, 37 s before the dates in the examples of RFC 9110.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(784_111_740)
    }

    #[test]
    fn retry_after_table() {
        let table: [(&str, Option<Duration>); 13] = [
            ("7", Some(Duration::from_secs(7))),
            (" 120 ", Some(Duration::from_secs(120))),
            ("0", Some(Duration::ZERO)),
            (
                "99999999999999999999999",
                Some(Duration::from_secs(u64::MAX)),
            ),
            (
                "Sun, 06 Nov 1994 08:49:37 GMT",
                Some(Duration::from_secs(37)),
            ),
            (
                "Sunday, 06-Nov-94 08:49:37 GMT",
                Some(Duration::from_secs(37)),
            ),
            ("Sun Nov  6 08:49:37 1994", Some(Duration::from_secs(37))),
            // 6 November 1994 was a Sunday.
            ("Mon, 06 Nov 1994 08:49:37 GMT", None),
            // In the past: retry now.
            ("Sat, 05 Nov 1994 08:49:37 GMT", Some(Duration::ZERO)),
            ("-5", None),
            ("1.5", None),
            ("soon", None),
            ("", None),
        ];
        for (value, want) in table {
            assert_eq!(parse_retry_after(value, now()), want, "{value:?}");
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).expect("header value"));
        }
        map
    }

    #[test]
    fn retry_after_precedence() {
        let now_secs = 784_111_740u64;
        let body = ErrorBody {
            reset_ms: Some((now_secs * 1000 + 2_500) as f64),
            ..ErrorBody::default()
        };
        let reset = (now_secs + 30).to_string();
        let all = headers(&[("retry-after", "7"), ("x-ratelimit-reset", &reset)]);
        let rate = headers(&[("x-ratelimit-reset", &reset)]);
        let none = HeaderMap::new();
        let empty = ErrorBody::default();
        let ms = Duration::from_millis;
        assert_eq!(retry_after(429, &all, &body, now()), Some(ms(7_000)));
        assert_eq!(retry_after(429, &rate, &body, now()), Some(ms(2_500)));
        assert_eq!(retry_after(429, &rate, &empty, now()), Some(ms(30_000)));
        assert_eq!(retry_after(429, &none, &empty, now()), None);
        // Retry-After counts for a 503; the rate-limit window does not count for a 400.
        assert_eq!(retry_after(503, &all, &empty, now()), Some(ms(7_000)));
        assert_eq!(retry_after(400, &rate, &body, now()), None);
    }

    #[test]
    fn rate_window_needs_remaining_and_reset() {
        let reset = (784_111_740u64 + 3).to_string();
        let full = headers(&[
            ("x-ratelimit-limit", "20"),
            ("x-ratelimit-remaining", "7"),
            ("x-ratelimit-reset", &reset),
        ]);
        assert_eq!(
            rate_window(&full, now()),
            Some(RateWindow {
                limit: Some(20),
                remaining: 7,
                reset_in: Duration::from_secs(3),
            })
        );
        let no_limit = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1")]);
        assert_eq!(
            rate_window(&no_limit, now()),
            Some(RateWindow {
                limit: None,
                remaining: 0,
                reset_in: Duration::ZERO, // in the past
            })
        );
        for partial in [
            headers(&[("x-ratelimit-remaining", "7")]),
            headers(&[("x-ratelimit-reset", &reset)]),
            headers(&[
                ("x-ratelimit-remaining", "many"),
                ("x-ratelimit-reset", &reset),
            ]),
            HeaderMap::new(),
        ] {
            assert_eq!(rate_window(&partial, now()), None, "{partial:?}");
        }
    }

    #[test]
    fn error_body_parsing_never_fails() {
        let vercel = br#"{"error":{"code":"rate_limited","message":"slow down","limit":{"remaining":0,"reset":1571432075,"resetMs":1571432075563,"total":6}}}"#;
        assert_eq!(
            parse_error_body(vercel),
            ErrorBody {
                code: Some("rate_limited".to_owned()),
                message: Some("slow down".to_owned()),
                reset_ms: Some(1_571_432_075_563.0),
            }
        );
        let seconds_only = br#"{"error":{"limit":{"reset":10}}}"#;
        assert_eq!(parse_error_body(seconds_only).reset_ms, Some(10_000.0));
        for junk in [
            &b""[..],
            b"<html><body>502 Bad Gateway</body></html>",
            b"{\"error\":{\"code\":\"bad_req",
            b"{\"error\":\"a string\"}",
            b"{\"error\":{\"code\":7,\"message\":null}}",
            b"[1,2]",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_error_body(junk), ErrorBody::default(), "{junk:?}");
        }
    }

    #[test]
    fn sanitize_scrubs_flattens_and_cuts() {
        let secrets = [SecretString::from("hunter2".to_owned())];
        assert_eq!(
            sanitize("bad value hunter2\nFAKE LOG LINE", secrets.iter(), 100),
            "bad value [REDACTED] FAKE LOG LINE"
        );
        assert_eq!(sanitize("abcdef", secrets.iter(), 3), "abc…");
        assert_eq!(sanitize("abc", secrets.iter(), 3), "abc");
    }
}
