//! One way of calling a provider's REST API, shared by the Vercel and
//! Grafana clients: retries, rate limits, what a status means, and the
//! provider's error text.
//!
//! - A 2xx is the answer.
//! - A 429 is waited out until the time its headers give
//!   (`X-RateLimit-Reset`, else `Retry-After`), at most [`RATE_LIMIT_CAP`]
//!   per wait and [`RATE_LIMIT_WAITS`] 429s in a row; a 429 that gives no
//!   readable time is backed off like a 5xx. A limit that resets later
//!   than the waits left could reach fails at once, naming when it
//!   resets: waiting part of the way would only get another 429.
//! - A 5xx, or a connection that failed or timed out, is retried with
//!   jittered exponential backoff until the backoff runs out.
//! - Any other status is an error at once: asking again would get the same
//!   answer. The error carries the status, so a caller to whom a 404 means
//!   "absent" branches on [`ApiError::status`].
//!
//! The decisions are pure functions ([`decide`], [`rate_limit_wait`],
//! [`error_text`]) tested on the response shapes the providers document;
//! [`Api::send`] only carries them out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use crate::error::{Kind, fail};

/// The longest one 429 is waited out, whatever its headers say: a deploy
/// should fail with a message rather than sit silent for an hour.
pub const RATE_LIMIT_CAP: Duration = Duration::from_secs(60);

/// How many 429s in a row one call takes before giving up.
pub const RATE_LIMIT_WAITS: usize = 5;

/// An `X-RateLimit-Reset` below this is seconds from now, not a UTC epoch
/// time (which has been above it since 2001): some APIs send the one, some
/// the other.
const EPOCH_SECONDS_FLOOR: u64 = 1_000_000_000;

/// How much of an error body that is not the provider's JSON is quoted.
const BODY_CHARS: usize = 300;

/// A provider's REST API: where it is, as whom, and how patiently to ask.
#[derive(Clone)]
pub struct Api {
    /// The provider's name, first word of every message ("Vercel").
    name: &'static str,
    http: reqwest::Client,
    base: String,
    token: String,
    backoff: ExponentialBuilder,
    rate_limit_cap: Duration,
    /// What to check after a 4xx, by status ("; check VERCEL_TOKEN").
    hint: fn(StatusCode) -> &'static str,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Api")
            .field("name", &self.name)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// How often and how long to back off after a 5xx or a failed connection.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The longest pause between two tries.
    pub max_delay: Duration,
    /// How many tries after the first.
    pub retries: usize,
}

impl Api {
    /// A client of the API at `base` (a trailing `/` is dropped), sending
    /// `token` as a bearer token; each request times out after `timeout`.
    pub fn new(
        name: &'static str,
        base: &str,
        token: &str,
        timeout: Duration,
        backoff: Backoff,
        hint: fn(StatusCode) -> &'static str,
    ) -> anyhow::Result<Api> {
        // The process's one crypto provider (main installs it too; a
        // library caller may not have).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("maily-deploy/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Api {
            name,
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            backoff: ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(backoff.max_delay)
                .with_max_times(backoff.retries)
                .with_jitter(),
            rate_limit_cap: RATE_LIMIT_CAP,
            hint,
        })
    }

    /// Cap 429 waits at `cap` instead of [`RATE_LIMIT_CAP`].
    pub fn with_rate_limit_cap(mut self, cap: Duration) -> Self {
        self.rate_limit_cap = cap;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `url` (the base and a path, and any query), with the
    /// bearer token.
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        self.http.request(method, url).bearer_auth(&self.token)
    }

    /// Send the request `make` builds (again for every try) until it
    /// answers 2xx, as the module's rules say; `what` names the call in
    /// messages ("reading deployment dpl_1").
    pub async fn send(
        &self,
        what: &str,
        make: impl Fn() -> RequestBuilder,
    ) -> Result<Response, ApiError> {
        let mut backoff = self.backoff.build();
        let mut rate_limited = 0;
        loop {
            let retry = match make().send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let next = decide(
                        status,
                        resp.headers(),
                        SystemTime::now(),
                        self.rate_limit_cap,
                        rate_limited,
                    );
                    match next {
                        Next::Done => return Ok(resp),
                        Next::WaitOut(wait) => {
                            rate_limited += 1;
                            let remaining = resp
                                .headers()
                                .get("x-ratelimit-remaining")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("?");
                            tracing::warn!(
                                "{} rate limit on {what} (X-RateLimit-Remaining {remaining}); {wait}",
                                self.name
                            );
                            tokio::time::sleep(wait.wait).await;
                            continue;
                        }
                        Next::Backoff => {
                            if status == StatusCode::TOO_MANY_REQUESTS {
                                rate_limited += 1;
                            }
                            Retry::Status {
                                status,
                                message: self.body_text(resp).await,
                            }
                        }
                        Next::ResetsTooLate(wait) => {
                            return Err(ApiError::ResetsTooLate {
                                api: self.name,
                                what: what.to_string(),
                                resets: wait.resets_at(SystemTime::now()),
                                waits_left: RATE_LIMIT_WAITS - rate_limited,
                                cap: self.rate_limit_cap,
                                wait,
                                message: self.body_text(resp).await,
                            });
                        }
                        Next::GiveUp => {
                            return Err(ApiError::RateLimited {
                                api: self.name,
                                what: what.to_string(),
                                times: rate_limited + 1,
                                message: self.body_text(resp).await,
                            });
                        }
                        Next::Reject => {
                            return Err(ApiError::Rejected {
                                api: self.name,
                                what: what.to_string(),
                                status,
                                message: self.body_text(resp).await,
                                hint: (self.hint)(status),
                            });
                        }
                    }
                }
                Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => {
                    Retry::Transport(transport_text(e))
                }
                Err(e) => {
                    return Err(ApiError::Request {
                        api: self.name,
                        what: what.to_string(),
                        detail: transport_text(e),
                    });
                }
            };
            match backoff.next() {
                Some(delay) => {
                    tracing::warn!(
                        "{} {what}: {retry}; retrying in {}",
                        self.name,
                        humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
                    );
                    tokio::time::sleep(delay).await;
                }
                None => {
                    return Err(ApiError::GaveUp {
                        api: self.name,
                        what: what.to_string(),
                        base: self.base.clone(),
                        last: retry.to_string(),
                    });
                }
            }
        }
    }

    /// A 2xx answer's body as `T`.
    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        resp: Response,
    ) -> Result<T, ApiError> {
        let unexpected = |detail: String| ApiError::Unexpected {
            api: self.name,
            what: what.to_string(),
            detail,
        };
        let body = read_body(resp).await.map_err(unexpected)?;
        serde_json::from_str(&body).map_err(|e| unexpected(e.to_string()))
    }

    async fn body_text(&self, resp: Response) -> String {
        error_text(&read_body(resp).await.unwrap_or_else(|why| why))
    }
}

/// The most of an answer the tool reads: 16 MiB. Every answer it reads is
/// a small JSON document (a Vault secret, a PromQL vector, a deployment, a
/// health check); a larger one is a wrong URL or a broken proxy, and
/// reading it whole would only cost memory.
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// An answer's body as text, read to at most [`MAX_ANSWER_BYTES`]; the
/// error is one line.
pub async fn read_body(resp: Response) -> Result<String, String> {
    match read_bytes_at_most(resp, MAX_ANSWER_BYTES).await? {
        Some(body) => Ok(String::from_utf8_lossy(&body).into_owned()),
        None => Err(format!(
            "the answer is larger than {MAX_ANSWER_BYTES} bytes (16 MiB), more than any answer of this API; is the URL right?"
        )),
    }
}

/// An answer's body, none once it passes `limit` bytes (by its
/// `Content-Length`, or as it comes: reading stops there); the error is
/// one line.
pub async fn read_bytes_at_most(
    mut resp: Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, String> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport_text)? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// A reqwest error as one line: what failed and why (the URL left out: the
/// messages name the call, and [`ApiError::GaveUp`] the base).
fn transport_text(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    crate::redact::scrub(&text).into_owned()
}

/// What one answer means for the call that got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// 2xx: the answer.
    Done,
    /// A 429 whose headers say when the limit resets: wait that long, then
    /// ask again. Waiting does not use up the backoff.
    WaitOut(RateLimitWait),
    /// A 429 whose limit resets later than the waits this call has left
    /// could reach: give up now, saying when it resets.
    ResetsTooLate(RateLimitWait),
    /// A 5xx, or a 429 with no readable reset: back off, ask again.
    Backoff,
    /// [`RATE_LIMIT_WAITS`] 429s came in a row already: give up.
    GiveUp,
    /// Any other status: asking again would get the same answer.
    Reject,
}

/// Decide what to do with an answer of `status` with `headers`, `now`,
/// after `rate_limited` 429s in a row for this call, waiting at most
/// `cap` for a rate limit.
pub fn decide(
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
    cap: Duration,
    rate_limited: usize,
) -> Next {
    if status.is_success() {
        Next::Done
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        let waits_left = RATE_LIMIT_WAITS.saturating_sub(rate_limited);
        if waits_left == 0 {
            Next::GiveUp
        } else {
            match rate_limit_wait(headers, now, cap) {
                None => Next::Backoff,
                Some(wait) if wait.full > cap.saturating_mul(waits_left as u32) => {
                    Next::ResetsTooLate(wait)
                }
                Some(wait) => Next::WaitOut(wait),
            }
        }
    } else if status.is_server_error() {
        Next::Backoff
    } else {
        Next::Reject
    }
}

/// How long to wait out a 429, and which header said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitWait {
    pub wait: Duration,
    /// How far off the headers put the reset, before the cap.
    pub full: Duration,
    /// Whether the cap cut the wait short, and the cap.
    pub capped: Option<Duration>,
    /// The header that gave the time, and its value.
    pub header: LimitHeader,
    pub value: String,
}

/// The headers a 429's end is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHeader {
    /// `Retry-After` (RFC 9110): seconds, or an HTTP date.
    RetryAfter,
    /// `X-RateLimit-Reset`: UTC epoch seconds (Vercel), or seconds from now.
    RateLimitReset,
}

impl std::fmt::Display for LimitHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitHeader::RetryAfter => "Retry-After",
            LimitHeader::RateLimitReset => "X-RateLimit-Reset",
        })
    }
}

impl RateLimitWait {
    /// When the limit resets, in UTC, for a person to read.
    pub fn resets_at(&self, now: SystemTime) -> String {
        chrono::DateTime::<chrono::Utc>::from(now + self.full)
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string()
    }
}

impl std::fmt::Display for RateLimitWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let wait = humantime::format_duration(Duration::from_millis(self.wait.as_millis() as u64));
        match self.header {
            LimitHeader::RateLimitReset => {
                write!(f, "waiting {wait} until X-RateLimit-Reset {}", self.value)?
            }
            LimitHeader::RetryAfter => {
                write!(f, "waiting {wait} as Retry-After {} says", self.value)?
            }
        }
        if let Some(cap) = self.capped {
            write!(f, ", capped at {}", humantime::format_duration(cap))?;
        }
        Ok(())
    }
}

/// How long to wait out a 429: until `X-RateLimit-Reset` (UTC epoch
/// seconds, as Vercel sends it; a small number is seconds from now), else
/// as `Retry-After` says (seconds, or an HTTP date), never more than `cap`.
/// `None` when neither header is readable (then the call backs off as
/// after a 5xx).
pub fn rate_limit_wait(
    headers: &HeaderMap,
    now: SystemTime,
    cap: Duration,
) -> Option<RateLimitWait> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let since_epoch = now.duration_since(UNIX_EPOCH).ok()?;
    let until = |at: Duration| at.saturating_sub(since_epoch);
    let reset = header("x-ratelimit-reset").and_then(|v| {
        let reset: u64 = v.parse().ok()?;
        let wait = if reset < EPOCH_SECONDS_FLOOR {
            Duration::from_secs(reset)
        } else {
            until(Duration::from_secs(reset))
        };
        Some((LimitHeader::RateLimitReset, v, wait))
    });
    let retry_after = || {
        let v = header("retry-after")?;
        let wait = match v.parse::<u64>() {
            Ok(secs) => Duration::from_secs(secs),
            Err(_) => {
                let at = chrono::DateTime::parse_from_rfc2822(v).ok()?.timestamp();
                until(Duration::from_secs(u64::try_from(at).ok()?))
            }
        };
        Some((LimitHeader::RetryAfter, v, wait))
    };
    let (name, value, wait) = reset.or_else(retry_after)?;
    // The times are whole seconds: a little margin past them, and a reset
    // already past still waits a moment rather than hammering.
    let wait = wait.max(Duration::from_millis(100));
    let full = wait;
    let (wait, capped) = if wait > cap {
        (cap, Some(cap))
    } else {
        (wait, None)
    };
    Some(RateLimitWait {
        wait,
        full,
        capped,
        header: name,
        value: value.to_string(),
    })
}

/// Why a call is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Retry {
    Status { status: StatusCode, message: String },
    Transport(String),
}

impl std::fmt::Display for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Retry::Status { status, message } => write!(f, "HTTP {} {message}", status.as_u16()),
            Retry::Transport(why) => f.write_str(why),
        }
    }
}

/// A provider's error body as one line, scrubbed of secrets: Vercel's
/// `{"error": {"code", "message"}}` as `message (code)`, Grafana's
/// `{"message": ...}` as the message, anything else as its first
/// 300 characters.
pub fn error_text(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let field = |v: Option<&serde_json::Value>, key: &str| {
        v.and_then(|v| v.get(key))
            .and_then(|c| c.as_str())
            .map(str::to_string)
    };
    let nested = parsed.as_ref().and_then(|v| v.get("error"));
    let text = match (field(nested, "code"), field(nested, "message")) {
        (Some(c), Some(m)) => format!("{m} ({c})"),
        (None, Some(m)) => m,
        (Some(c), None) => c,
        (None, None) => match field(parsed.as_ref(), "message") {
            Some(m) => m,
            None => {
                let t = body.trim();
                if t.chars().count() > BODY_CHARS {
                    format!("{}…", t.chars().take(BODY_CHARS).collect::<String>())
                } else {
                    t.to_string()
                }
            }
        },
    };
    crate::redact::scrub(&text).into_owned()
}

/// Why a call to a provider's API failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A status other than 2xx, 429 and 5xx: asking again would get the
    /// same answer.
    #[error("{api} {what}: HTTP {} {message}{hint}", status.as_u16())]
    Rejected {
        api: &'static str,
        what: String,
        status: StatusCode,
        message: String,
        hint: &'static str,
    },
    /// 429 after 429, [`RATE_LIMIT_WAITS`] of them waited out.
    #[error(
        "{api} {what}: HTTP 429 {message}; rate limited {times} times in a row, gave up after retrying"
    )]
    RateLimited {
        api: &'static str,
        what: String,
        times: usize,
        message: String,
    },
    /// A 429 whose limit resets later than the waits left could reach.
    #[error(
        "{api} {what}: HTTP 429 {message}; the limit resets at {resets} (in {}, {} {}), later than a run waits for a rate limit ({waits_left} × {}); run again after it",
        humantime::format_duration(Duration::from_secs(wait.full.as_secs())),
        wait.header,
        wait.value,
        humantime::format_duration(*cap)
    )]
    ResetsTooLate {
        api: &'static str,
        what: String,
        resets: String,
        wait: RateLimitWait,
        waits_left: usize,
        cap: Duration,
        message: String,
    },
    /// 5xx or connection failures until the backoff ran out; `last` is the
    /// last of them.
    #[error("{api} {what} at {base}: {last}; gave up after retrying")]
    GaveUp {
        api: &'static str,
        what: String,
        base: String,
        last: String,
    },
    /// The request failed in a way another try would not mend.
    #[error("{api} {what}: {detail}")]
    Request {
        api: &'static str,
        what: String,
        detail: String,
    },
    /// A 2xx whose body is not what the provider's reference describes.
    #[error("{api} {what}: the answer is not what the API reference describes ({detail})")]
    Unexpected {
        api: &'static str,
        what: String,
        detail: String,
    },
}

impl ApiError {
    /// The status that made the call fail for good, when it was one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ApiError::Rejected { status, .. } => Some(*status),
            ApiError::RateLimited { .. } | ApiError::ResetsTooLate { .. } => {
                Some(StatusCode::TOO_MANY_REQUESTS)
            }
            _ => None,
        }
    }

    /// As the phases report it: a phase failure.
    pub fn into_failure(self) -> anyhow::Error {
        fail(Kind::PhaseFailed, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderName, HeaderValue};

    const NOW: u64 = 1_700_000_000;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_static(k),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// A 429 as Vercel sends it: the limit, what is left, and the reset in
    /// UTC epoch seconds.
    fn vercel_429(reset_in: u64) -> HeaderMap {
        headers(&[
            ("x-ratelimit-limit", "100"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &(NOW + reset_in).to_string()),
        ])
    }

    const CAP: Duration = Duration::from_secs(60);

    fn next(status: u16, h: &HeaderMap, rate_limited: usize) -> Next {
        decide(
            StatusCode::from_u16(status).unwrap(),
            h,
            now(),
            CAP,
            rate_limited,
        )
    }

    #[test]
    fn a_2xx_is_the_answer_whatever_it_carries() {
        for status in [200, 201, 202, 204] {
            assert_eq!(next(status, &HeaderMap::new(), 0), Next::Done, "{status}");
        }
        assert_eq!(next(200, &vercel_429(10), 3), Next::Done);
    }

    #[test]
    fn a_5xx_is_backed_off_and_a_4xx_is_final() {
        for status in [500, 502, 503, 504] {
            assert_eq!(
                next(status, &HeaderMap::new(), 0),
                Next::Backoff,
                "{status}"
            );
        }
        for status in [400, 401, 403, 404, 409, 412, 422] {
            assert_eq!(next(status, &HeaderMap::new(), 0), Next::Reject, "{status}");
        }
    }

    #[test]
    fn vercels_429_is_waited_out_until_its_reset() {
        assert_eq!(
            next(429, &vercel_429(10), 0),
            Next::WaitOut(RateLimitWait {
                wait: Duration::from_secs(10),
                full: Duration::from_secs(10),
                capped: None,
                header: LimitHeader::RateLimitReset,
                value: (NOW + 10).to_string(),
            })
        );
        let Next::WaitOut(wait) = next(429, &vercel_429(10), 0) else {
            unreachable!()
        };
        assert_eq!(
            wait.to_string(),
            "waiting 10s until X-RateLimit-Reset 1700000010"
        );
    }

    #[test]
    fn a_reset_past_the_cap_is_waited_in_capped_steps_while_the_waits_left_reach_it() {
        // 90 s: one capped wait of 60 s, then the rest.
        let Next::WaitOut(wait) = next(429, &vercel_429(90), 0) else {
            panic!("a reset the waits reach is waited out")
        };
        assert_eq!(wait.wait, CAP);
        assert_eq!(wait.full, Duration::from_secs(90));
        assert_eq!(wait.capped, Some(CAP));
        assert!(wait.to_string().ends_with(", capped at 1m"), "{wait}");
        // Five waits of 60 s reach a reset 300 s away, four do not.
        assert!(matches!(next(429, &vercel_429(300), 0), Next::WaitOut(_)));
        assert!(matches!(
            next(429, &vercel_429(300), 1),
            Next::ResetsTooLate(_)
        ));
    }

    #[test]
    fn a_reset_hours_away_gives_up_at_once_saying_when() {
        let Next::ResetsTooLate(wait) = next(429, &vercel_429(3 * 3600), 0) else {
            panic!("a reset three hours away is not waited for")
        };
        assert_eq!(wait.full, Duration::from_secs(3 * 3600));
        assert_eq!(wait.resets_at(now()), "2023-11-15 01:13:20 UTC");
        let err = ApiError::ResetsTooLate {
            api: "Vercel",
            what: "reading deployment dpl_1".into(),
            resets: wait.resets_at(now()),
            waits_left: RATE_LIMIT_WAITS,
            cap: CAP,
            wait,
            message: "Rate limit exceeded (rate_limited)".into(),
        };
        assert_eq!(
            err.to_string(),
            "Vercel reading deployment dpl_1: HTTP 429 Rate limit exceeded (rate_limited); \
             the limit resets at 2023-11-15 01:13:20 UTC (in 3h, X-RateLimit-Reset 1700010800), \
             later than a run waits for a rate limit (5 × 1m); run again after it"
        );
        assert_eq!(err.status(), Some(StatusCode::TOO_MANY_REQUESTS));
        // Retry-After far off too.
        let h = headers(&[("retry-after", "7200")]);
        assert!(matches!(next(429, &h, 0), Next::ResetsTooLate(_)));
    }

    #[test]
    fn a_reset_already_past_still_waits_a_moment() {
        let h = headers(&[("x-ratelimit-reset", &(NOW - 1).to_string())]);
        assert_eq!(
            rate_limit_wait(&h, now(), CAP).map(|w| w.wait),
            Some(Duration::from_millis(100))
        );
    }

    #[test]
    fn a_small_reset_is_seconds_from_now() {
        let h = headers(&[("x-ratelimit-reset", "17")]);
        assert_eq!(
            rate_limit_wait(&h, now(), CAP).map(|w| w.wait),
            Some(Duration::from_secs(17))
        );
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date_when_there_is_no_reset() {
        // Grafana Cloud's 429: `Retry-After` in seconds.
        let h = headers(&[("retry-after", "30")]);
        let wait = rate_limit_wait(&h, now(), CAP).unwrap();
        assert_eq!(wait.wait, Duration::from_secs(30));
        assert_eq!(wait.to_string(), "waiting 30s as Retry-After 30 says");

        // 2023-11-14T22:13:40Z is NOW + 20 s.
        let h = headers(&[("retry-after", "Tue, 14 Nov 2023 22:13:40 GMT")]);
        assert_eq!(
            rate_limit_wait(&h, now(), CAP).map(|w| w.wait),
            Some(Duration::from_secs(20))
        );

        // Vercel's reset decides when both come, as documented.
        let mut both = vercel_429(50);
        both.insert("retry-after", HeaderValue::from_static("5"));
        assert_eq!(
            rate_limit_wait(&both, now(), CAP).map(|w| (w.wait, w.header)),
            Some((Duration::from_secs(50), LimitHeader::RateLimitReset))
        );

        // An unreadable reset leaves Retry-After to decide.
        let odd = headers(&[("x-ratelimit-reset", "soon"), ("retry-after", "8")]);
        assert_eq!(
            rate_limit_wait(&odd, now(), CAP).map(|w| (w.wait, w.header)),
            Some((Duration::from_secs(8), LimitHeader::RetryAfter))
        );
    }

    #[test]
    fn a_429_without_a_readable_time_is_backed_off() {
        assert_eq!(next(429, &HeaderMap::new(), 0), Next::Backoff);
        let h = headers(&[("x-ratelimit-reset", "soon")]);
        assert_eq!(next(429, &h, 0), Next::Backoff);
    }

    #[test]
    fn the_sixth_429_in_a_row_gives_up() {
        assert!(matches!(
            next(429, &vercel_429(1), RATE_LIMIT_WAITS - 1),
            Next::WaitOut(_)
        ));
        assert_eq!(next(429, &vercel_429(1), RATE_LIMIT_WAITS), Next::GiveUp);
        assert_eq!(next(429, &HeaderMap::new(), RATE_LIMIT_WAITS), Next::GiveUp);
    }

    #[test]
    fn vercel_error_bodies_read_as_message_and_code() {
        assert_eq!(
            error_text(r#"{"error":{"code":"forbidden","message":"Not authorized"}}"#),
            "Not authorized (forbidden)"
        );
        assert_eq!(
            error_text(
                r#"{"error":{"code":"rate_limited","message":"Rate limit exceeded","limit":{"remaining":0,"reset":1700000010,"total":100}}}"#
            ),
            "Rate limit exceeded (rate_limited)"
        );
        assert_eq!(error_text(r#"{"error":{"code":"not_found"}}"#), "not_found");
    }

    #[test]
    fn grafana_error_bodies_read_as_their_message() {
        assert_eq!(
            error_text(r#"{"message":"folder not found","status":"not-found"}"#),
            "folder not found"
        );
        assert_eq!(
            error_text(
                r#"{"message":"The dashboard has been changed by someone else","status":"version-mismatch"}"#
            ),
            "The dashboard has been changed by someone else"
        );
        assert_eq!(
            error_text(r#"{"message":"Invalid API key","traceID":""}"#),
            "Invalid API key"
        );
    }

    #[test]
    fn other_bodies_are_quoted_clipped() {
        assert_eq!(error_text("upstream timeout\n"), "upstream timeout");
        let long = "x".repeat(1000);
        let text = error_text(&long);
        assert_eq!(text.chars().count(), BODY_CHARS + 1);
        assert!(text.ends_with('…'));
    }

    #[test]
    fn an_echoed_credential_is_scrubbed_from_the_error_text() {
        let text = error_text(
            r#"{"message":"bad request (headers: Authorization: Bearer glsa_abcdefghijklmnop_12345678)"}"#,
        );
        assert!(!text.contains("glsa_abcdefghijklmnop"), "{text}");
        assert!(text.contains("[REDACTED]"), "{text}");
    }

    #[test]
    fn the_errors_say_what_failed_and_what_to_check() {
        let rejected = ApiError::Rejected {
            api: "Vercel",
            what: "reading project prj_1".into(),
            status: StatusCode::FORBIDDEN,
            message: error_text(r#"{"error":{"code":"forbidden","message":"Not authorized"}}"#),
            hint: "; check VERCEL_TOKEN",
        };
        assert_eq!(
            rejected.to_string(),
            "Vercel reading project prj_1: HTTP 403 Not authorized (forbidden); check VERCEL_TOKEN"
        );
        assert_eq!(rejected.status(), Some(StatusCode::FORBIDDEN));
        let gave_up = ApiError::GaveUp {
            api: "Grafana",
            what: "reading folder maily-staging".into(),
            base: "http://grafana:3000".into(),
            last: Retry::Status {
                status: StatusCode::BAD_GATEWAY,
                message: "Bad gateway".into(),
            }
            .to_string(),
        };
        assert_eq!(
            gave_up.to_string(),
            "Grafana reading folder maily-staging at http://grafana:3000: HTTP 502 Bad gateway; gave up after retrying"
        );
        assert_eq!(gave_up.status(), None);
        let failure = gave_up.into_failure();
        assert_eq!(crate::error::kind_of(&failure), Some(Kind::PhaseFailed));
    }
}
