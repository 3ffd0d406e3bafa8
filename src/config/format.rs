//! The formats a variable's value can have, and their checks.
//!
//! Checks are offline (nothing is contacted) and their messages never quote
//! the value: the caller decides whether the value may be shown, since a
//! malformed secret is still a secret.

use sha3::{Digest, Keccak256};
use url::Url;

use super::duration::{DurationError, DurationRule};
use super::k8s_rules::RuleError;

/// A variable's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Anything but empty or blank.
    NonEmpty,
    /// `http://` or `https://` with a host.
    HttpUrl,
    /// `postgres://` or `postgresql://` with a host and a database name.
    PostgresUrl,
    /// `redis://` or `rediss://` (TLS) with a host.
    RedisUrl,
    /// `amqp://` or `amqps://` (TLS) with a host.
    AmqpUrl,
    /// Where database backups go: `file:///absolute/dir/` or `s3://bucket/prefix/`.
    BackupUrl,
    /// An Ethereum address: `0x` and 40 hex digits, EIP-55 checksummed when mixed-case.
    EthAddress,
    /// A whole number within bounds.
    Integer { min: i64, max: i64 },
    /// A duration such as `30s`, `5m`, `1h 30m`, a whole number of the
    /// unit its rule says it is used in (see [`super::duration`]).
    Duration(DurationRule),
    /// One of a fixed set of words.
    Enum(&'static [&'static str]),
    /// A container registry and repository prefix, e.g. `ghcr.io/maily`.
    ImageRegistry,
    /// A container image tag, e.g. `v1.4.2` or `sha-1a2b3c4`.
    ImageTag,
    /// A GitHub repository: `owner/name`, or its numeric id.
    GithubRepo,
}

impl Format {
    /// A short name for messages and the template (`postgres URL`).
    pub fn describe(self) -> String {
        match self {
            Format::NonEmpty => "non-empty".into(),
            Format::HttpUrl => "http(s) URL".into(),
            Format::PostgresUrl => "postgres URL".into(),
            Format::RedisUrl => "redis URL".into(),
            Format::AmqpUrl => "amqp URL".into(),
            Format::BackupUrl => "file:// or s3:// URL".into(),
            Format::EthAddress => "0x address".into(),
            Format::Integer { min, max } if max == i64::MAX => format!("integer >= {min}"),
            Format::Integer { min, max } => format!("integer {min}..={max}"),
            Format::Duration(rule) => rule.describe(),
            Format::Enum(words) => format!("one of {}", words.join(", ")),
            Format::ImageRegistry => "image registry".into(),
            Format::ImageTag => "image tag".into(),
            Format::GithubRepo => "GitHub owner/name or repository id".into(),
        }
    }

    /// What a value must be, as the object of "set X to …": with its
    /// article where it takes one (`an amqp URL`, `a non-empty value`),
    /// bare where it does not (`one of on, off`).
    pub fn wanted(self) -> String {
        match self {
            Format::NonEmpty => "a non-empty value".into(),
            Format::Enum(_) => self.describe(),
            other => crate::wording::a_or_an(&other.describe()),
        }
    }

    /// An example of a good value, for the "how to fix" line.
    pub fn example(self) -> String {
        match self {
            Format::NonEmpty => "a value".into(),
            Format::HttpUrl => "https://host.example.com".into(),
            Format::PostgresUrl => "postgres://USER:PASSWORD@HOST:5432/DATABASE".into(),
            Format::RedisUrl => "redis://:PASSWORD@HOST:6379/0 (rediss:// for TLS)".into(),
            Format::AmqpUrl => "amqp://USER:PASSWORD@HOST:5672/VHOST (amqps:// for TLS)".into(),
            Format::BackupUrl => "s3://BUCKET/PREFIX/ or file:///var/backups/maily/".into(),
            Format::EthAddress => "0x followed by 40 hex digits".into(),
            Format::Integer { min, .. } => format!("a whole number such as {}", min.max(1)),
            Format::Duration(_) => "30s, 5m or 1h 30m".into(),
            Format::Enum(words) => words.join(" or "),
            Format::ImageRegistry => "ghcr.io/maily or registry.example.com:5000/maily".into(),
            Format::ImageTag => "v1.4.2 or sha-1a2b3c4".into(),
            Format::GithubRepo => "maily/maily-frontend or 123456789".into(),
        }
    }

    /// Check a value; the error says what is wrong without quoting it.
    pub fn check(self, value: &str) -> Result<(), FormatError> {
        if value.trim().is_empty() {
            return Err(FormatError::Empty);
        }
        if value.trim() != value {
            return Err(FormatError::Padded);
        }
        match self {
            Format::NonEmpty => Ok(()),
            Format::HttpUrl => url_with_host(value, &["http", "https"])
                .map(drop)
                .map_err(FormatError::Url),
            Format::PostgresUrl => postgres_url(value),
            Format::RedisUrl => redis_url(value),
            Format::AmqpUrl => url_with_host(value, &["amqp", "amqps"])
                .map(drop)
                .map_err(FormatError::Url),
            Format::BackupUrl => backup_url(value),
            Format::EthAddress => eth_address(value),
            Format::Integer { min, max } => integer(value, min, max),
            Format::Duration(rule) => rule.parse(value).map(drop).map_err(FormatError::Duration),
            Format::Enum(words) => one_of(value, words),
            Format::ImageRegistry => image_registry(value),
            Format::ImageTag => image_tag(value),
            Format::GithubRepo => github_repo(value),
        }
    }
}

/// What is wrong with a value, as the end of a sentence whose subject the
/// caller names ("DATABASE_URL has no database name after the host"). A
/// kind rather than a text so that a caller can tell the problems apart
/// (and a test can pin which one it got); no variant holds the value, so
/// no message can leak a malformed secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("is empty")]
    Empty,
    #[error("has leading or trailing white space")]
    Padded,
    #[error(transparent)]
    Url(#[from] UrlError),
    /// Kept apart from [`FormatError::Url`]: the reader of a
    /// `DATABASE_URL` problem is told which kind of URL was expected.
    #[error("is not a PostgreSQL URL: it {0}")]
    NotPostgresUrl(UrlError),
    #[error("has no database name after the host")]
    NoDatabase,
    #[error("has an unknown sslmode; use one of {}", SSL_MODES.join(", "))]
    UnknownSslMode,
    /// As [`FormatError::NotPostgresUrl`], for `REDIS_URL`.
    #[error("is not a Redis URL: it {0}")]
    NotRedisUrl(UrlError),
    #[error("has a database index that is not a number (the path must be /0, /1, ...)")]
    RedisIndex,
    #[error("names a host; a file URL needs three slashes: file:///absolute/dir/")]
    FileUrlHost,
    #[error("has no bucket: s3://BUCKET/PREFIX/")]
    NoBucket,
    #[error("does not start with 0x")]
    No0x,
    /// `len` is all that may be said of a wrong address: the count of what
    /// follows the `0x`, never the characters.
    #[error("is not 40 hex digits after 0x ({len} characters)")]
    NotFortyHexDigits { len: usize },
    #[error("fails its EIP-55 checksum (a mistyped character?); copy the address again")]
    Checksum,
    #[error("is not a whole number")]
    NotWholeNumber,
    #[error("{}", out_of_range(*.min, *.max))]
    OutOfRange { min: i64, max: i64 },
    #[error("is over {max}, the most it may be")]
    TooLarge { max: i64 },
    /// `closest` is one of `words` (never the value), offered when the
    /// value is a near miss.
    #[error("{}", not_one_of(.words, *.closest))]
    NotOneOf {
        words: &'static [&'static str],
        closest: Option<&'static str>,
    },
    #[error("has a scheme; give the registry without it, e.g. ghcr.io/maily")]
    RegistryScheme,
    #[error("ends with /; drop it, the image name is appended")]
    RegistryTrailingSlash,
    #[error("has white space or capitals; registry paths are lowercase")]
    RegistryCase,
    #[error("has an empty path segment (//)")]
    RegistryEmptySegment,
    #[error(
        "is not a valid image tag (letters, digits, _ . -, not starting with . or -, at most 128)"
    )]
    BadTag,
    /// The manifests label each Deployment with its tag, so a tag a
    /// registry takes can still be one no label can hold.
    #[error(
        "is a valid image tag, but the manifests put it in the label app.kubernetes.io/version, and it {0}"
    )]
    TagNotLabelValue(RuleError),
    #[error(transparent)]
    Duration(DurationError),
    #[error("is neither owner/name nor a numeric GitHub repository id")]
    NotGithubRepo,
}

/// What is wrong with a URL before its kind's own rules are checked;
/// shared by the http, amqp, PostgreSQL, Redis and backup URLs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// `url`'s parse errors name the rule broken ("invalid port number"),
    /// never the text, so they may be shown.
    #[error("is not a URL ({0})")]
    NotAUrl(url::ParseError),
    /// The schemes that would have done, for the message.
    #[error("has the wrong scheme; expected {}", schemes(.0))]
    WrongScheme(&'static [&'static str]),
    #[error("has no host")]
    NoHost,
}

fn schemes(expected: &[&str]) -> String {
    expected
        .iter()
        .map(|s| format!("{s}://"))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// An unbounded maximum is no bound the reader needs to hear about.
fn out_of_range(min: i64, max: i64) -> String {
    if max == i64::MAX {
        format!("must be at least {min}")
    } else {
        format!("must be between {min} and {max}")
    }
}

fn not_one_of(words: &[&str], closest: Option<&str>) -> String {
    match closest {
        Some(w) => format!("is not one of {}; did you mean {w}?", words.join(", ")),
        None => format!("is not one of {}", words.join(", ")),
    }
}

/// `owner/name` (one slash, both sides non-empty) or a numeric repository id;
/// the same rule as `providers::vercel::GitRepo::parse`.
fn github_repo(value: &str) -> Result<(), FormatError> {
    if value.chars().all(|c| c.is_ascii_digit()) {
        return Ok(());
    }
    match value.split_once('/') {
        Some((owner, name)) if !owner.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(())
        }
        _ => Err(FormatError::NotGithubRepo),
    }
}

fn url_with_host(value: &str, schemes: &'static [&'static str]) -> Result<Url, UrlError> {
    let url = Url::parse(value).map_err(UrlError::NotAUrl)?;
    if !schemes.contains(&url.scheme()) {
        return Err(UrlError::WrongScheme(schemes));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost);
    }
    Ok(url)
}

/// The sslmodes libpq knows; any other is refused by the driver at connect
/// time, in the middle of a deploy.
const SSL_MODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

fn postgres_url(value: &str) -> Result<(), FormatError> {
    let url =
        url_with_host(value, &["postgres", "postgresql"]).map_err(FormatError::NotPostgresUrl)?;
    if url.path().trim_start_matches('/').is_empty() {
        return Err(FormatError::NoDatabase);
    }
    for (key, mode) in url.query_pairs() {
        if key == "sslmode" && !SSL_MODES.contains(&mode.as_ref()) {
            return Err(FormatError::UnknownSslMode);
        }
    }
    Ok(())
}

fn redis_url(value: &str) -> Result<(), FormatError> {
    let url = url_with_host(value, &["redis", "rediss"]).map_err(FormatError::NotRedisUrl)?;
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u32>().is_err() {
        return Err(FormatError::RedisIndex);
    }
    Ok(())
}

fn backup_url(value: &str) -> Result<(), FormatError> {
    let url = Url::parse(value).map_err(UrlError::NotAUrl)?;
    match url.scheme() {
        "file" => {
            if url.host_str().is_some_and(|h| !h.is_empty()) {
                return Err(FormatError::FileUrlHost);
            }
            Ok(())
        }
        "s3" => {
            if url.host_str().is_none_or(str::is_empty) {
                return Err(FormatError::NoBucket);
            }
            Ok(())
        }
        _ => Err(UrlError::WrongScheme(&["file", "s3"]).into()),
    }
}

fn eth_address(value: &str) -> Result<(), FormatError> {
    let Some(hex) = value.strip_prefix("0x") else {
        return Err(FormatError::No0x);
    };
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FormatError::NotFortyHexDigits { len: hex.len() });
    }
    let mixed_case =
        hex.bytes().any(|b| b.is_ascii_lowercase()) && hex.bytes().any(|b| b.is_ascii_uppercase());
    if mixed_case && !eip55_checksum_ok(hex) {
        return Err(FormatError::Checksum);
    }
    Ok(())
}

/// EIP-55: a mixed-case address encodes a checksum in the case of its
/// letters, so a typo in a copied address is caught before a deploy verifies
/// against the wrong contract.
fn eip55_checksum_ok(hex: &str) -> bool {
    let lower = hex.to_ascii_lowercase();
    let hash = Keccak256::digest(lower.as_bytes());
    hex.chars().enumerate().all(|(i, c)| {
        if !c.is_ascii_alphabetic() {
            return true;
        }
        let nibble = (hash[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 0x0f;
        (nibble >= 8) == c.is_ascii_uppercase()
    })
}

fn integer(value: &str, min: i64, max: i64) -> Result<(), FormatError> {
    // Digits past what an i64 holds are a whole number out of range, and
    // said as the range, not as "not a whole number".
    let digits = value.strip_prefix('-').unwrap_or(value);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && value.parse::<i64>().is_err()
    {
        return Err(if value.starts_with('-') {
            FormatError::OutOfRange { min, max }
        } else {
            FormatError::TooLarge { max }
        });
    }
    let n: i64 = value.parse().map_err(|_| FormatError::NotWholeNumber)?;
    if n < min || n > max {
        return Err(FormatError::OutOfRange { min, max });
    }
    Ok(())
}

fn one_of(value: &str, words: &'static [&'static str]) -> Result<(), FormatError> {
    if words.contains(&value) {
        return Ok(());
    }
    let closest = words
        .iter()
        .find(|w| strsim::levenshtein(w, value) <= 2 || w.eq_ignore_ascii_case(value))
        .copied();
    Err(FormatError::NotOneOf { words, closest })
}

fn image_registry(value: &str) -> Result<(), FormatError> {
    if value.contains("://") {
        return Err(FormatError::RegistryScheme);
    }
    if value.ends_with('/') {
        return Err(FormatError::RegistryTrailingSlash);
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_ascii_uppercase())
    {
        return Err(FormatError::RegistryCase);
    }
    if value.split('/').any(str::is_empty) {
        return Err(FormatError::RegistryEmptySegment);
    }
    Ok(())
}

fn image_tag(value: &str) -> Result<(), FormatError> {
    let bytes = value.as_bytes();
    let first_ok = bytes
        .first()
        .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_');
    let rest_ok = bytes
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !first_ok || !rest_ok || bytes.len() > 128 {
        return Err(FormatError::BadTag);
    }
    super::k8s_rules::label_value(value).map_err(FormatError::TagNotLabelValue)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::duration::{DATABASE_LOCK_TIMEOUT, ROLLOUT_TIMEOUT};
    use std::time::Duration;

    /// A duration in whole seconds, as most variables are.
    const SECONDS: Format = Format::Duration(ROLLOUT_TIMEOUT);
    /// A PostgreSQL timeout.
    const PG_TIMEOUT: Format = Format::Duration(DATABASE_LOCK_TIMEOUT);

    fn ok(f: Format, v: &str) {
        assert!(
            f.check(v).is_ok(),
            "{f:?} should accept {v:?}: {:?}",
            f.check(v)
        );
    }

    fn bad(f: Format, v: &str, why: &str) {
        let err = f
            .check(v)
            .expect_err(&format!("{f:?} should reject {v:?}"))
            .to_string();
        assert!(
            err.contains(why),
            "{f:?} {v:?}: {err:?} should mention {why:?}"
        );
    }

    #[test]
    fn non_empty() {
        ok(Format::NonEmpty, "x");
        bad(Format::NonEmpty, "", "empty");
        bad(Format::NonEmpty, "   ", "empty");
        bad(Format::NonEmpty, " padded", "white space");
    }

    #[test]
    fn github_repositories() {
        ok(Format::GithubRepo, "maily/maily-frontend");
        ok(Format::GithubRepo, "123456789");
        bad(Format::GithubRepo, "maily-frontend", "owner/name");
        bad(Format::GithubRepo, "maily/web/app", "owner/name");
        bad(Format::GithubRepo, "/app", "owner/name");
    }

    #[test]
    fn http_urls() {
        ok(Format::HttpUrl, "https://api.vercel.com");
        ok(Format::HttpUrl, "http://127.0.0.1:9090/prom");
        bad(Format::HttpUrl, "ftp://example.com", "wrong scheme");
        bad(Format::HttpUrl, "https://", "not a URL");
        bad(Format::HttpUrl, "example.com", "not a URL");
    }

    #[test]
    fn postgres_urls() {
        ok(
            Format::PostgresUrl,
            "postgres://maily:pw@db.example.com:5432/maily",
        );
        ok(Format::PostgresUrl, "postgresql://u@h/d?sslmode=require");
        bad(Format::PostgresUrl, "mysql://u:p@h/d", "wrong scheme");
        bad(
            Format::PostgresUrl,
            "postgres://u:p@db.example.com:5432",
            "no database name",
        );
        bad(
            Format::PostgresUrl,
            "postgres://u:p@db.example.com:5432/",
            "no database name",
        );
        bad(
            Format::PostgresUrl,
            "postgres://u@h/d?sslmode=required",
            "sslmode",
        );
        bad(Format::PostgresUrl, "postgres://h:99999/d", "not a URL");
    }

    #[test]
    fn redis_urls() {
        ok(Format::RedisUrl, "redis://localhost:6379/0");
        ok(Format::RedisUrl, "rediss://:secret@cache.example.com:6380");
        bad(Format::RedisUrl, "http://localhost:6379", "wrong scheme");
        bad(Format::RedisUrl, "redis://localhost/zero", "database index");
    }

    #[test]
    fn amqp_urls() {
        ok(Format::AmqpUrl, "amqp://guest:guest@localhost:5672/%2f");
        ok(Format::AmqpUrl, "amqps://mq.example.com");
        bad(Format::AmqpUrl, "redis://localhost", "wrong scheme");
        bad(Format::AmqpUrl, "amqp://", "no host");
    }

    #[test]
    fn backup_urls() {
        ok(Format::BackupUrl, "file:///var/backups/maily/");
        ok(Format::BackupUrl, "s3://maily-backups/production/");
        bad(Format::BackupUrl, "file://var/backups", "three slashes");
        bad(Format::BackupUrl, "gs://bucket/x", "wrong scheme");
        bad(Format::BackupUrl, "/var/backups", "not a URL");
    }

    #[test]
    fn eth_addresses() {
        ok(
            Format::EthAddress,
            "0x52908400098527886e0f7030069857d2e4169ee7",
        );
        ok(
            Format::EthAddress,
            "0x52908400098527886E0F7030069857D2E4169EE7",
        );
        // EIP-55's own test vectors.
        ok(
            Format::EthAddress,
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        );
        ok(
            Format::EthAddress,
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        );
        bad(
            Format::EthAddress,
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",
            "EIP-55",
        );
        bad(
            Format::EthAddress,
            "52908400098527886e0f7030069857d2e4169ee7",
            "0x",
        );
        bad(
            Format::EthAddress,
            "0x52908400098527886e0f7030069857d2e4169e",
            "40 hex digits",
        );
        bad(
            Format::EthAddress,
            "0x52908400098527886e0f7030069857d2e4169eeg",
            "40 hex digits",
        );
    }

    #[test]
    fn integers() {
        let f = Format::Integer {
            min: 1,
            max: i64::MAX,
        };
        ok(f, "137");
        bad(f, "0", "at least 1");
        bad(f, "1.5", "whole number");
        bad(f, "one", "whole number");
        // Past what any integer holds: still a whole number, out of range.
        bad(f, "18446744073709551616", "is over 9223372036854775807");
        let pct = Format::Integer { min: 0, max: 100 };
        bad(pct, "101", "between 0 and 100");
        bad(pct, "-99999999999999999999", "between 0 and 100");
    }

    #[test]
    fn durations() {
        ok(SECONDS, "30s");
        ok(SECONDS, "1h 30m");
        bad(SECONDS, "30", "not a duration");
        bad(SECONDS, "0s", "zero");
        assert_eq!(
            ROLLOUT_TIMEOUT.parse("5m").unwrap(),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn enums() {
        let f = Format::Enum(&["token", "kubernetes"]);
        ok(f, "token");
        bad(f, "tokn", "did you mean token");
        bad(f, "ldap", "not one of token, kubernetes");
    }

    #[test]
    fn image_registries() {
        ok(Format::ImageRegistry, "ghcr.io/maily");
        ok(
            Format::ImageRegistry,
            "registry.example.com:5000/maily/prod",
        );
        bad(Format::ImageRegistry, "https://ghcr.io/maily", "scheme");
        bad(Format::ImageRegistry, "ghcr.io/maily/", "ends with /");
        bad(Format::ImageRegistry, "ghcr.io/Maily", "lowercase");
    }

    #[test]
    fn image_tags() {
        ok(Format::ImageTag, "v1.4.2");
        ok(Format::ImageTag, "sha-1a2b3c4");
        bad(Format::ImageTag, "-v1", "valid image tag");
        bad(Format::ImageTag, "v1 2", "valid image tag");
        bad(Format::ImageTag, &"a".repeat(129), "valid image tag");
        // Valid tags that no label value can be.
        bad(
            Format::ImageTag,
            &"a".repeat(64),
            "over the 63 a label value",
        );
        bad(Format::ImageTag, "_v1", "app.kubernetes.io/version");
        bad(Format::ImageTag, "v1.", "app.kubernetes.io/version");
    }

    #[test]
    fn postgres_timeouts_fit_an_int32_of_milliseconds() {
        ok(PG_TIMEOUT, "10m");
        ok(PG_TIMEOUT, "24days");
        bad(PG_TIMEOUT, "30days", "PostgreSQL");
        bad(PG_TIMEOUT, "0s", "zero");
        assert!(DATABASE_LOCK_TIMEOUT.parse("2147483647ms").is_ok());
        assert!(DATABASE_LOCK_TIMEOUT.parse("2147483648ms").is_err());
    }

    #[test]
    fn durations_past_an_int32_of_seconds_are_refused() {
        assert!(ROLLOUT_TIMEOUT.parse("68y").is_ok());
        bad(SECONDS, "69y", "int32");
        bad(SECONDS, "100000000000s", "int32");
    }

    #[test]
    fn messages_never_quote_the_value() {
        let secretish = "postgres://maily:hunter2-XYZ@db.example.com";
        let err = Format::PostgresUrl.check(secretish).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = Format::HttpUrl.check("hunter2-XYZ").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    fn kind(f: Format, v: &str) -> FormatError {
        f.check(v).expect_err(&format!("{f:?} should reject {v:?}"))
    }

    #[test]
    fn every_format_refuses_empty_and_padded_values_first() {
        for f in [Format::NonEmpty, Format::PostgresUrl, Format::ImageTag] {
            assert!(matches!(kind(f, ""), FormatError::Empty));
            assert!(matches!(kind(f, " \t"), FormatError::Empty));
            assert!(matches!(kind(f, "x "), FormatError::Padded));
        }
    }

    #[test]
    fn url_kinds() {
        use url::ParseError;
        assert!(matches!(
            kind(Format::HttpUrl, "example.com"),
            FormatError::Url(UrlError::NotAUrl(ParseError::RelativeUrlWithoutBase))
        ));
        assert!(matches!(
            kind(Format::HttpUrl, "ftp://example.com"),
            FormatError::Url(UrlError::WrongScheme(["http", "https"]))
        ));
        assert!(matches!(
            kind(Format::AmqpUrl, "amqp://"),
            FormatError::Url(UrlError::NoHost)
        ));
        assert!(matches!(
            kind(Format::PostgresUrl, "mysql://u:p@h/d"),
            FormatError::NotPostgresUrl(UrlError::WrongScheme(_))
        ));
        assert!(matches!(
            kind(Format::PostgresUrl, "postgres://h:99999/d"),
            FormatError::NotPostgresUrl(UrlError::NotAUrl(ParseError::InvalidPort))
        ));
        assert!(matches!(
            kind(Format::PostgresUrl, "postgres://u:p@h:5432/"),
            FormatError::NoDatabase
        ));
        assert!(matches!(
            kind(Format::PostgresUrl, "postgres://u@h/d?sslmode=required"),
            FormatError::UnknownSslMode
        ));
        assert!(matches!(
            kind(Format::RedisUrl, "http://localhost:6379"),
            FormatError::NotRedisUrl(UrlError::WrongScheme(["redis", "rediss"]))
        ));
        assert!(matches!(
            kind(Format::RedisUrl, "redis://localhost/zero"),
            FormatError::RedisIndex
        ));
        assert!(matches!(
            kind(Format::BackupUrl, "file://var/backups"),
            FormatError::FileUrlHost
        ));
        assert!(matches!(
            kind(Format::BackupUrl, "s3:///prefix/"),
            FormatError::NoBucket
        ));
        assert!(matches!(
            kind(Format::BackupUrl, "gs://bucket/x"),
            FormatError::Url(UrlError::WrongScheme(["file", "s3"]))
        ));
        assert!(matches!(
            kind(Format::BackupUrl, "/var/backups"),
            FormatError::Url(UrlError::NotAUrl(_))
        ));
    }

    #[test]
    fn address_and_number_kinds() {
        assert!(matches!(
            kind(
                Format::EthAddress,
                "52908400098527886e0f7030069857d2e4169ee7"
            ),
            FormatError::No0x
        ));
        assert!(matches!(
            kind(
                Format::EthAddress,
                "0x52908400098527886e0f7030069857d2e4169e"
            ),
            FormatError::NotFortyHexDigits { len: 38 }
        ));
        assert!(matches!(
            kind(
                Format::EthAddress,
                "0x52908400098527886e0f7030069857d2e4169eeg"
            ),
            FormatError::NotFortyHexDigits { len: 40 }
        ));
        assert!(matches!(
            kind(
                Format::EthAddress,
                "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"
            ),
            FormatError::Checksum
        ));
        let pct = Format::Integer { min: 0, max: 100 };
        assert!(matches!(kind(pct, "1.5"), FormatError::NotWholeNumber));
        assert!(matches!(
            kind(pct, "101"),
            FormatError::OutOfRange { min: 0, max: 100 }
        ));
        assert!(matches!(
            kind(pct, "-1"),
            FormatError::OutOfRange { min: 0, max: 100 }
        ));
        assert!(matches!(
            kind(SECONDS, "30"),
            FormatError::Duration(DurationError::NotADuration)
        ));
        assert!(matches!(
            kind(SECONDS, "0s"),
            FormatError::Duration(DurationError::Zero)
        ));
        assert!(matches!(
            kind(SECONDS, "-1m"),
            FormatError::Duration(DurationError::Negative)
        ));
        assert!(matches!(
            kind(SECONDS, "69y"),
            FormatError::Duration(DurationError::TooLong)
        ));
    }

    #[test]
    fn word_and_name_kinds() {
        let f = Format::Enum(&["token", "kubernetes"]);
        assert!(matches!(
            kind(f, "tokn"),
            FormatError::NotOneOf {
                closest: Some("token"),
                ..
            }
        ));
        assert!(matches!(
            kind(f, "Kubernetes"),
            FormatError::NotOneOf {
                closest: Some("kubernetes"),
                ..
            }
        ));
        assert!(matches!(
            kind(f, "ldap"),
            FormatError::NotOneOf { closest: None, .. }
        ));
        assert!(matches!(
            kind(Format::ImageRegistry, "https://ghcr.io/maily"),
            FormatError::RegistryScheme
        ));
        assert!(matches!(
            kind(Format::ImageRegistry, "ghcr.io/maily/"),
            FormatError::RegistryTrailingSlash
        ));
        assert!(matches!(
            kind(Format::ImageRegistry, "ghcr.io/Maily"),
            FormatError::RegistryCase
        ));
        assert!(matches!(
            kind(Format::ImageRegistry, "ghcr.io//maily"),
            FormatError::RegistryEmptySegment
        ));
        assert!(matches!(kind(Format::ImageTag, "-v1"), FormatError::BadTag));
        assert!(matches!(
            kind(Format::ImageTag, &"a".repeat(129)),
            FormatError::BadTag
        ));
        assert!(matches!(
            kind(Format::ImageTag, &"a".repeat(64)),
            FormatError::TagNotLabelValue(RuleError::LabelValueTooLong { len: 64 })
        ));
        assert!(matches!(
            kind(Format::ImageTag, "_v1"),
            FormatError::TagNotLabelValue(RuleError::LabelValueChars)
        ));
        assert!(matches!(
            kind(Format::GithubRepo, "maily/web/app"),
            FormatError::NotGithubRepo
        ));
    }

    /// The texts as they were when the checks returned strings: validate's
    /// report, provision's terraform problems and the e2e tests read them.
    #[test]
    fn messages_are_the_texts_users_know() {
        let cases: &[(Format, &str, &str)] = &[
            (Format::NonEmpty, " ", "is empty"),
            (
                Format::NonEmpty,
                " x",
                "has leading or trailing white space",
            ),
            (
                Format::HttpUrl,
                "example.com",
                "is not a URL (relative URL without a base)",
            ),
            (
                Format::HttpUrl,
                "ftp://example.com",
                "has the wrong scheme; expected http:// or https://",
            ),
            (Format::AmqpUrl, "amqp://", "has no host"),
            (
                Format::PostgresUrl,
                "mysql://u:p@h/d",
                "is not a PostgreSQL URL: it has the wrong scheme; expected postgres:// or postgresql://",
            ),
            (
                Format::PostgresUrl,
                "postgres://u@h",
                "has no database name after the host",
            ),
            (
                Format::PostgresUrl,
                "postgres://u@h/d?sslmode=on",
                "has an unknown sslmode; use one of disable, allow, prefer, require, verify-ca, verify-full",
            ),
            (
                Format::RedisUrl,
                "redis://",
                "is not a Redis URL: it has no host",
            ),
            (
                Format::RedisUrl,
                "redis://h/x",
                "has a database index that is not a number (the path must be /0, /1, ...)",
            ),
            (
                Format::BackupUrl,
                "file://var/backups",
                "names a host; a file URL needs three slashes: file:///absolute/dir/",
            ),
            (
                Format::BackupUrl,
                "s3:///x",
                "has no bucket: s3://BUCKET/PREFIX/",
            ),
            (
                Format::BackupUrl,
                "gs://b/x",
                "has the wrong scheme; expected file:// or s3://",
            ),
            (Format::EthAddress, "1234", "does not start with 0x"),
            (
                Format::EthAddress,
                "0x12",
                "is not 40 hex digits after 0x (2 characters)",
            ),
            (
                Format::EthAddress,
                "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",
                "fails its EIP-55 checksum (a mistyped character?); copy the address again",
            ),
            (
                Format::Integer { min: 1, max: 9 },
                "x",
                "is not a whole number",
            ),
            (
                Format::Integer {
                    min: 1,
                    max: i64::MAX,
                },
                "0",
                "must be at least 1",
            ),
            (
                Format::Integer { min: 0, max: 100 },
                "101",
                "must be between 0 and 100",
            ),
            (
                SECONDS,
                "30",
                "is not a duration (a number with a unit: s, m, h)",
            ),
            (
                Format::Enum(&["token", "kubernetes"]),
                "tokn",
                "is not one of token, kubernetes; did you mean token?",
            ),
            (
                Format::Enum(&["token", "kubernetes"]),
                "ldap",
                "is not one of token, kubernetes",
            ),
            (
                Format::ImageRegistry,
                "https://ghcr.io",
                "has a scheme; give the registry without it, e.g. ghcr.io/maily",
            ),
            (
                Format::ImageRegistry,
                "ghcr.io/",
                "ends with /; drop it, the image name is appended",
            ),
            (
                Format::ImageRegistry,
                "GHCR.io",
                "has white space or capitals; registry paths are lowercase",
            ),
            (
                Format::ImageRegistry,
                "a//b",
                "has an empty path segment (//)",
            ),
            (
                Format::ImageTag,
                ".v1",
                "is not a valid image tag (letters, digits, _ . -, not starting with . or -, at most 128)",
            ),
            (
                Format::ImageTag,
                "v1-",
                "is a valid image tag, but the manifests put it in the label app.kubernetes.io/version, and it is not a valid label value (letters, digits, - _ ., starting and ending with a letter or digit)",
            ),
            (
                Format::GithubRepo,
                "x",
                "is neither owner/name nor a numeric GitHub repository id",
            ),
        ];
        for (f, v, text) in cases {
            assert_eq!(kind(*f, v).to_string(), *text, "{f:?} {v:?}");
        }
    }
}
