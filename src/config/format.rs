//! The formats a variable's value can have, and their checks.
//!
//! Checks are offline (nothing is contacted) and their messages never quote
//! the value: the caller decides whether the value may be shown, since a
//! malformed secret is still a secret.

use std::time::Duration;

use sha3::{Digest, Keccak256};
use url::Url;

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
    /// A duration such as `30s`, `5m`, `1h 30m`.
    Duration,
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
            Format::Duration => "duration".into(),
            Format::Enum(words) => format!("one of {}", words.join(", ")),
            Format::ImageRegistry => "image registry".into(),
            Format::ImageTag => "image tag".into(),
            Format::GithubRepo => "GitHub owner/name or repository id".into(),
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
            Format::Duration => "30s, 5m or 1h 30m".into(),
            Format::Enum(words) => words.join(" or "),
            Format::ImageRegistry => "ghcr.io/maily or registry.example.com:5000/maily".into(),
            Format::ImageTag => "v1.4.2 or sha-1a2b3c4".into(),
            Format::GithubRepo => "maily/maily-frontend or 123456789".into(),
        }
    }

    /// Check a value; the error says what is wrong without quoting it.
    pub fn check(self, value: &str) -> Result<(), String> {
        if value.trim().is_empty() {
            return Err("is empty".into());
        }
        if value.trim() != value {
            return Err("has leading or trailing white space".into());
        }
        match self {
            Format::NonEmpty => Ok(()),
            Format::HttpUrl => url_with_host(value, &["http", "https"]).map(drop),
            Format::PostgresUrl => postgres_url(value),
            Format::RedisUrl => redis_url(value),
            Format::AmqpUrl => url_with_host(value, &["amqp", "amqps"]).map(drop),
            Format::BackupUrl => backup_url(value),
            Format::EthAddress => eth_address(value),
            Format::Integer { min, max } => integer(value, min, max),
            Format::Duration => duration(value).map(drop).map_err(|e| e.to_string()),
            Format::Enum(words) => one_of(value, words),
            Format::ImageRegistry => image_registry(value),
            Format::ImageTag => image_tag(value),
            Format::GithubRepo => github_repo(value),
        }
    }
}

/// `owner/name` (one slash, both sides non-empty) or a numeric repository id;
/// the same rule as `providers::vercel::GitRepo::parse`.
fn github_repo(value: &str) -> Result<(), String> {
    if value.chars().all(|c| c.is_ascii_digit()) {
        return Ok(());
    }
    match value.split_once('/') {
        Some((owner, name)) if !owner.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(())
        }
        _ => Err("is neither owner/name nor a numeric GitHub repository id".into()),
    }
}

/// The longest duration the tool takes: what an int32 seconds field
/// (`progressDeadlineSeconds`, `leaseDurationSeconds`) holds, about 68
/// years. Longer is a typo, and would wrap when written to one (or
/// overflow a deadline computed from it).
pub const MAX_DURATION_SECS: u64 = i32::MAX as u64;

/// The problem with a duration past [`MAX_DURATION_SECS`].
pub fn too_long() -> String {
    format!(
        "is longer than {MAX_DURATION_SECS} seconds (about 68 years), the most a Kubernetes seconds field (an int32) holds"
    )
}

/// What is wrong with a duration; the text follows the subject
/// ("ROLLOUT_TIMEOUT is zero; ...").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("is zero; give a positive duration")]
    Zero,
    #[error("{}", too_long())]
    TooLong,
    #[error("is not a duration (a number with a unit: s, m, h)")]
    NotADuration,
}

/// Parse a duration in the form the variable spec accepts.
pub fn duration(value: &str) -> Result<Duration, DurationError> {
    match humantime::parse_duration(value) {
        Ok(d) if d.is_zero() => Err(DurationError::Zero),
        Ok(d) if d.as_secs() > MAX_DURATION_SECS => Err(DurationError::TooLong),
        Ok(d) => Ok(d),
        Err(_) => Err(DurationError::NotADuration),
    }
}

fn url_with_host(value: &str, schemes: &[&str]) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("is not a URL ({e})"))?;
    if !schemes.contains(&url.scheme()) {
        let expected: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
        return Err(format!(
            "has the wrong scheme; expected {}",
            expected.join(" or ")
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(url)
}

fn postgres_url(value: &str) -> Result<(), String> {
    let url = url_with_host(value, &["postgres", "postgresql"])
        .map_err(|e| format!("is not a PostgreSQL URL: it {e}"))?;
    if url.path().trim_start_matches('/').is_empty() {
        return Err("has no database name after the host".into());
    }
    const SSL_MODES: &[&str] = &[
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ];
    for (key, mode) in url.query_pairs() {
        if key == "sslmode" && !SSL_MODES.contains(&mode.as_ref()) {
            return Err(format!(
                "has an unknown sslmode; use one of {}",
                SSL_MODES.join(", ")
            ));
        }
    }
    Ok(())
}

fn redis_url(value: &str) -> Result<(), String> {
    let url = url_with_host(value, &["redis", "rediss"])
        .map_err(|e| format!("is not a Redis URL: it {e}"))?;
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u32>().is_err() {
        return Err(
            "has a database index that is not a number (the path must be /0, /1, ...)".into(),
        );
    }
    Ok(())
}

fn backup_url(value: &str) -> Result<(), String> {
    let url = Url::parse(value).map_err(|e| format!("is not a URL ({e})"))?;
    match url.scheme() {
        "file" => {
            if url.host_str().is_some_and(|h| !h.is_empty()) {
                return Err(
                    "names a host; a file URL needs three slashes: file:///absolute/dir/".into(),
                );
            }
            Ok(())
        }
        "s3" => {
            if url.host_str().is_none_or(str::is_empty) {
                return Err("has no bucket: s3://BUCKET/PREFIX/".into());
            }
            Ok(())
        }
        _ => Err("has the wrong scheme; expected file:// or s3://".into()),
    }
}

fn eth_address(value: &str) -> Result<(), String> {
    let Some(hex) = value.strip_prefix("0x") else {
        return Err("does not start with 0x".into());
    };
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "is not 40 hex digits after 0x ({} characters)",
            hex.len()
        ));
    }
    let mixed_case =
        hex.bytes().any(|b| b.is_ascii_lowercase()) && hex.bytes().any(|b| b.is_ascii_uppercase());
    if mixed_case && !eip55_checksum_ok(hex) {
        return Err(
            "fails its EIP-55 checksum (a mistyped character?); copy the address again".into(),
        );
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

fn integer(value: &str, min: i64, max: i64) -> Result<(), String> {
    let n: i64 = value
        .parse()
        .map_err(|_| "is not a whole number".to_string())?;
    if n < min || n > max {
        return Err(if max == i64::MAX {
            format!("must be at least {min}")
        } else {
            format!("must be between {min} and {max}")
        });
    }
    Ok(())
}

fn one_of(value: &str, words: &[&str]) -> Result<(), String> {
    if words.contains(&value) {
        return Ok(());
    }
    let close = words
        .iter()
        .find(|w| strsim::levenshtein(w, value) <= 2 || w.eq_ignore_ascii_case(value));
    Err(match close {
        Some(w) => format!("is not one of {}; did you mean {w}?", words.join(", ")),
        None => format!("is not one of {}", words.join(", ")),
    })
}

fn image_registry(value: &str) -> Result<(), String> {
    if value.contains("://") {
        return Err("has a scheme; give the registry without it, e.g. ghcr.io/maily".into());
    }
    if value.ends_with('/') {
        return Err("ends with /; drop it, the image name is appended".into());
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_ascii_uppercase())
    {
        return Err("has white space or capitals; registry paths are lowercase".into());
    }
    if value.split('/').any(str::is_empty) {
        return Err("has an empty path segment (//)".into());
    }
    Ok(())
}

fn image_tag(value: &str) -> Result<(), String> {
    let bytes = value.as_bytes();
    let first_ok = bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_';
    let rest_ok = bytes
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !first_ok || !rest_ok || bytes.len() > 128 {
        return Err(
            "is not a valid image tag (letters, digits, _ . -, not starting with . or -, at most 128)"
                .into(),
        );
    }
    // The manifests label each Deployment with its tag.
    super::k8s_rules::label_value(value).map_err(|why| {
        format!(
            "is a valid image tag, but the manifests put it in the label app.kubernetes.io/version, and it {why}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(f: Format, v: &str) {
        assert!(
            f.check(v).is_ok(),
            "{f:?} should accept {v:?}: {:?}",
            f.check(v)
        );
    }

    fn bad(f: Format, v: &str, why: &str) {
        let err = f.check(v).expect_err(&format!("{f:?} should reject {v:?}"));
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
        let pct = Format::Integer { min: 0, max: 100 };
        bad(pct, "101", "between 0 and 100");
    }

    #[test]
    fn durations() {
        ok(Format::Duration, "30s");
        ok(Format::Duration, "1h 30m");
        bad(Format::Duration, "30", "not a duration");
        bad(Format::Duration, "0s", "zero");
        assert_eq!(duration("5m").unwrap(), Duration::from_secs(300));
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
    fn durations_past_an_int32_of_seconds_are_refused() {
        assert!(duration("68y").is_ok());
        bad(Format::Duration, "69y", "int32");
        bad(Format::Duration, "100000000000s", "int32");
    }

    #[test]
    fn messages_never_quote_the_value() {
        let secretish = "postgres://maily:hunter2-XYZ@db.example.com";
        let err = Format::PostgresUrl.check(secretish).unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        let err = Format::HttpUrl.check("hunter2-XYZ").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
