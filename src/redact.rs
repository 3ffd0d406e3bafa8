//! Secret redaction for everything the tool prints and everything it writes
//! to the cluster.
//!
//! Validation never quotes a secret, but errors come from many places (a
//! driver echoing a connection string, a provider echoing a key or the
//! request's `Authorization` header). So every byte bound for stdout,
//! stderr, logs, reports, snapshots and the rollout record passes through
//! [`scrub`], which replaces each registered secret (and the forms it can
//! take inside a URL or a JSON string) with `[REDACTED:<NAME>]`, and any
//! credential a request header carries with `[REDACTED]`, registered or not:
//! a snapshot outlives the env file that registered the token, and is
//! printed by `history` on machines that never had it.

use std::borrow::Cow;
use std::sync::RwLock;

/// The shortest secret the redactor hides, and the shortest secret value
/// `validate` accepts. Hiding every occurrence of a shorter text (a blank,
/// `x`, `guest`) would deface the output without protecting anything: no
/// real credential is that short. A URL's password or path segment shorter
/// than this is hidden only as part of its whole URL.
pub const MIN_SECRET_CHARS: usize = 8;

/// Registered secrets as (text to hide, variable name), longest first so a
/// secret that contains another is hidden whole.
static SECRETS: RwLock<Vec<(String, String)>> = RwLock::new(Vec::new());

/// Register a secret value under its variable's name. A value shorter than
/// [`MIN_SECRET_CHARS`] is not registered (validate refuses it instead).
pub fn register(name: &str, value: &str) {
    let mut forms = vec![value.to_string()];
    // A URL's password may be printed alone (e.g. by a database driver), and
    // percent-decoded; an RPC or webhook URL carries its key in the path or
    // the query, which an error may echo without the host; and JSON output
    // escapes quotes and backslashes.
    if let Ok(url) = url::Url::parse(value) {
        if let Some(pw) = url.password() {
            forms.push(pw.to_string());
            forms.push(percent_decoded(pw));
        }
        if url.username().len() >= LONE_USER_TOKEN_CHARS {
            // Long user names are tokens (e.g. Slack, Infura) rather than names.
            forms.push(url.username().to_string());
        }
        // A database's, a cache's or a broker's path names the database,
        // its index or the vhost, never a key: hiding a database named
        // like `maily_pr_2024` would blank it out of every message.
        let path_names_a_place = matches!(
            url.scheme(),
            "postgres" | "postgresql" | "redis" | "rediss" | "amqp" | "amqps"
        );
        for segment in url
            .path_segments()
            .into_iter()
            .flatten()
            .filter(|_| !path_names_a_place)
        {
            let decoded = percent_decoded(segment);
            if token_like(&decoded) {
                forms.push(segment.to_string());
                forms.push(decoded);
            }
        }
        for (key, v) in url.query_pairs() {
            if token_like(&v) || (secret_key_name(&key) && v.len() >= MIN_SECRET_CHARS) {
                forms.push(v.into_owned());
            }
        }
        if let Some(raw) = url.query() {
            // The raw (still percent-encoded) values, as a request line shows them.
            for pair in raw.split('&') {
                if let Some((key, v)) = pair.split_once('=')
                    && (token_like(&percent_decoded(v))
                        || (secret_key_name(key) && v.len() >= MIN_SECRET_CHARS))
                {
                    forms.push(v.to_string());
                }
            }
        }
    }
    let escaped: Vec<String> = forms
        .iter()
        .filter_map(|f| serde_json::to_string(f).ok())
        .map(|json| json[1..json.len() - 1].to_string())
        .collect();
    forms.extend(escaped);
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for form in forms {
        if long_enough(&form) && !secrets.iter().any(|(f, _)| *f == form) {
            secrets.push((form, name.to_string()));
        }
    }
    secrets.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
}

/// Whether a secret is long enough to be one (see [`MIN_SECRET_CHARS`]).
pub fn long_enough(value: &str) -> bool {
    value.trim().chars().count() >= MIN_SECRET_CHARS
}

/// Whether a URL part looks like a key rather than a word: long, of the
/// characters keys are made of, and mixing letters and digits or cases
/// (`9aa3d95b3bc440fa88ea12eaa4456161`, not `production-dashboards`).
fn token_like(part: &str) -> bool {
    let classes = [
        part.bytes().any(|b| b.is_ascii_lowercase()),
        part.bytes().any(|b| b.is_ascii_uppercase()),
        part.bytes().any(|b| b.is_ascii_digit()),
    ];
    part.len() >= 16
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~+=".contains(&b))
        && classes.iter().filter(|c| **c).count() >= 2
}

/// Whether a query parameter's name says its value is a credential.
pub fn secret_key_name(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "key",
        "token",
        "secret",
        "password",
        "passwd",
        "auth",
        "sig",
        "signature",
        "credential",
    ]
    .iter()
    .any(|k| key.contains(k))
}

fn percent_decoded(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The text with every registered secret, and every credential a request
/// header carries, replaced.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let named = scrub_registered(text);
    let headers = match scrub_headers(&named) {
        Cow::Borrowed(_) => named,
        Cow::Owned(s) => Cow::Owned(s),
    };
    match scrub_url_credentials(&headers) {
        Cow::Borrowed(_) => headers,
        Cow::Owned(s) => Cow::Owned(s),
    }
}

/// A URL's password, whoever's it is: `scheme://user:password@host`
/// becomes `scheme://user:[REDACTED]@host`, and a user name long enough to
/// be a token with no password (`https://ghp_…@github.com`) is hidden
/// whole. Registering covers the values the tool knows are secret; this
/// covers the ones it never got to register: a URL refused by validation
/// and quoted in its message, a credential URL typed where an image, an
/// environment name or a flag's value was expected, a parser quoting the
/// line it stopped at.
fn scrub_url_credentials(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let ends_authority = |c: u8| c.is_ascii_whitespace() || b"/?#\"'<>`\\".contains(&c);
    let mut hide: Vec<(usize, usize)> = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("://") {
        let start = from + at + 3;
        let end = text[start..]
            .bytes()
            .position(ends_authority)
            .map_or(text.len(), |n| start + n);
        from = end.max(start);
        let Some(userinfo_len) = text[start..end].rfind('@') else {
            continue;
        };
        let userinfo = &text[start..start + userinfo_len];
        match userinfo.split_once(':') {
            Some((user, password))
                if !password.is_empty() && !password.starts_with("[REDACTED") =>
            {
                let password_start = start + user.len() + 1;
                hide.push((password_start, start + userinfo_len));
            }
            None if userinfo.len() >= LONE_USER_TOKEN_CHARS
                && !userinfo.starts_with("[REDACTED") =>
            {
                hide.push((start, start + userinfo_len));
            }
            _ => {}
        }
    }
    if hide.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in hide {
        out.push_str(&text[at..start]);
        out.push_str("[REDACTED]");
        at = end;
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

/// A URL's user name with no password this long is taken for a token (as
/// [`register`] takes it): Slack, Infura and git hosts put keys there.
const LONE_USER_TOKEN_CHARS: usize = 12;

fn scrub_registered(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|(s, _)| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for (secret, name) in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), &format!("[REDACTED:{name}]"));
        }
    }
    Cow::Owned(out)
}

/// Headers and keys whose value is a credential, lower-case: the HTTP
/// headers, and a kubeconfig user's keys, which a YAML parser's error
/// (the kubeconfig's, or an exec plugin's answer) quotes with the lines
/// around the fault.
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "x-vault-token",
    "token",
    "password",
    "client-key-data",
    "client-secret",
    "id-token",
    "refresh-token",
    "access-token",
];

/// Credentials as an echoed request shows them, whoever's they are:
/// `Bearer <token>` anywhere, and the value of an `Authorization:` (or
/// `x-api-key`, `X-Vault-Token`, ...) header, in a header line, a debug
/// dump or JSON (`"authorization": "..."`). The scheme word is kept
/// (`Authorization: Bearer [REDACTED]`), the credential never. A value
/// ends at a quote, a backslash, a line end or a separator, so JSON stays
/// JSON.
fn scrub_headers(text: &str) -> Cow<'_, str> {
    let lower = text.to_ascii_lowercase();
    if !lower.contains("bearer") && !CREDENTIAL_HEADERS.iter().any(|h| lower.contains(h)) {
        return Cow::Borrowed(text);
    }
    // Byte ranges of credentials to replace; ASCII lower-casing keeps
    // byte offsets, so `lower`'s ranges are `text`'s.
    let mut hide: Vec<(usize, usize)> = Vec::new();
    for header in CREDENTIAL_HEADERS {
        let mut from = 0;
        while let Some(at) = lower[from..].find(header) {
            let start = from + at;
            from = start + header.len();
            if start > 0 && is_name_byte(lower.as_bytes()[start - 1]) {
                continue;
            }
            if let Some(range) = header_value(text, from) {
                hide.push(range);
            }
        }
    }
    let mut from = 0;
    while let Some(at) = lower[from..].find("bearer") {
        let start = from + at;
        from = start + "bearer".len();
        if start > 0 && lower.as_bytes()[start - 1].is_ascii_alphanumeric() {
            continue;
        }
        if let Some(range) = bearer_token(text, from) {
            hide.push(range);
        }
    }
    if hide.is_empty() {
        return Cow::Borrowed(text);
    }
    // A Bearer token inside an Authorization value is found twice: one
    // mark per stretch of hidden text.
    hide.sort();
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (start, end) in hide {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in merged {
        out.push_str(&text[at..start]);
        out.push_str("[REDACTED]");
        at = end;
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Characters of an RFC 6750 `b64token` (and of the tokens providers issue).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b)
}

/// A header's value after its name at `from`: `: v`, `=v`, `": "v"`. The
/// range of the credential, without a leading scheme word; `None` when
/// the name is not followed by a value (prose, or already redacted).
fn header_value(text: &str, from: usize) -> Option<(usize, usize)> {
    let b = text.as_bytes();
    let mut i = from;
    let skip_quote = |i: &mut usize| {
        if *i < b.len() && (b[*i] == b'"' || b[*i] == b'\'') {
            *i += 1;
        }
    };
    let skip_space = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t') {
            *i += 1;
        }
    };
    skip_quote(&mut i);
    skip_space(&mut i);
    if i >= b.len() || !(b[i] == b':' || b[i] == b'=') {
        return None;
    }
    i += 1;
    skip_space(&mut i);
    skip_quote(&mut i);
    if text[i..].starts_with("[REDACTED") {
        return None;
    }
    let start = i;
    while i < b.len() && !b"\"'\\\r\n,;&{}()[]<>".contains(&b[i]) {
        i += 1;
    }
    if text[i..].starts_with("[REDACTED")
        && text[start..i]
            .trim()
            .bytes()
            .all(|c| c.is_ascii_alphabetic())
    {
        // `Authorization: Bearer [REDACTED:NAME]`: already hidden.
        return None;
    }
    let value = &text[start..i];
    let trimmed = value.trim_end();
    let end = start + trimmed.len();
    // Keep a scheme word (`Bearer`, `Basic`, `token`) for the reader.
    let start = match trimmed.split_once(' ') {
        Some((scheme, rest))
            if !rest.trim().is_empty() && scheme.bytes().all(|c| c.is_ascii_alphabetic()) =>
        {
            start + scheme.len() + (rest.len() - rest.trim_start().len()) + 1
        }
        _ => start,
    };
    (end > start).then_some((start, end))
}

/// The token after `Bearer` at `from` (white space, then at least
/// [`MIN_SECRET_CHARS`] token characters): shorter words are prose
/// ("a bearer token").
fn bearer_token(text: &str, from: usize) -> Option<(usize, usize)> {
    let b = text.as_bytes();
    let mut i = from;
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    if i == from {
        return None;
    }
    let start = i;
    while i < b.len() && is_token_byte(b[i]) {
        i += 1;
    }
    (i - start >= MIN_SECRET_CHARS).then_some((start, i))
}

/// Scrub every string of a JSON document (and every key), in place: for
/// records written to the cluster, where the text is structured.
pub fn scrub_json(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) => {
            if let Cow::Owned(clean) = scrub(s) {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(scrub_json),
        Value::Object(map) => {
            let entries = std::mem::take(map);
            for (key, mut v) in entries {
                scrub_json(&mut v);
                map.insert(scrub(&key).into_owned(), v);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_a_secret_and_its_url_password() {
        register(
            "TEST_DB_URL",
            "postgres://maily:p%40ss-Word9@db.example.com/maily",
        );
        let out = scrub(
            "connect postgres://maily:p%40ss-Word9@db.example.com/maily failed; password p@ss-Word9 rejected",
        );
        assert!(!out.contains("Word9"), "{out}");
        assert!(out.contains("[REDACTED:TEST_DB_URL]"));
    }

    #[test]
    fn hides_the_json_escaped_form() {
        register("TEST_TOKEN", "abc\"def\\ghi-secret");
        let json =
            serde_json::to_string(&serde_json::json!({"v": "abc\"def\\ghi-secret"})).unwrap();
        let out = scrub(&json);
        assert!(!out.contains("ghi-secret"), "{out}");
        assert!(
            serde_json::from_str::<serde_json::Value>(&out).is_ok(),
            "still JSON: {out}"
        );
    }

    #[test]
    fn leaves_clean_text_alone() {
        assert!(matches!(scrub("nothing to see"), Cow::Borrowed(_)));
        assert!(matches!(
            scrub("the bearer token and the Authorization header were refused"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_database_urls_name_stays_readable_and_its_password_does_not() {
        register(
            "TEST_DATABASE_URL",
            "postgres://maily:Pw-0f-The-Db-9x@db.example.com:5432/maily_pr_2024_eu1?sslmode=require",
        );
        let said = scrub(
            "restore of db.example.com:5432/maily_pr_2024_eu1 as maily: password Pw-0f-The-Db-9x refused",
        );
        assert!(said.contains("/maily_pr_2024_eu1 as maily"), "{said}");
        assert!(!said.contains("Pw-0f-The-Db-9x"), "{said}");
    }

    #[test]
    fn hides_the_key_in_an_rpc_urls_path_when_an_error_echoes_the_path() {
        // Infura and Alchemy put the key in the path.
        register(
            "TEST_ETHEREUM_RPC_URL",
            "https://mainnet.infura.io/v3/9aa3d95b3bc440fa88ea12eaa4456161",
        );
        register(
            "TEST_POLYGON_RPC_URL",
            "https://polygon-mainnet.g.alchemy.com/v2/Xq7LmN2pQrS9tUvW3yZaBcDeFgHiJkL0",
        );
        for (echo, key) in [
            (
                "POST /v3/9aa3d95b3bc440fa88ea12eaa4456161 answered 401",
                "9aa3d95b3bc440fa88ea12eaa4456161",
            ),
            (
                "project id 9aa3d95b3bc440fa88ea12eaa4456161 does not exist",
                "9aa3d95b3bc440fa88ea12eaa4456161",
            ),
            (
                "https://POLYGON-MAINNET.g.alchemy.com:443/v2/Xq7LmN2pQrS9tUvW3yZaBcDeFgHiJkL0/",
                "Xq7LmN2pQrS9tUvW3yZaBcDeFgHiJkL0",
            ),
        ] {
            let out = scrub(echo);
            assert!(!out.contains(key), "{out}");
            assert!(out.contains("[REDACTED:TEST_"), "{out}");
        }
        // The URL's words are not secrets: they stay readable.
        assert_eq!(scrub("mainnet.infura.io /v3/"), "mainnet.infura.io /v3/");
    }

    #[test]
    fn hides_a_secret_urls_query_values() {
        register(
            "TEST_WEBHOOK_URL",
            "https://hooks.example.com/notify?channel=deploys&token=s3cr3t-Query-Value&sig=ab%2Bcd%3D0123",
        );
        let out = scrub(
            "GET /notify?channel=deploys&token=s3cr3t-Query-Value&sig=ab%2Bcd%3D0123 -> 403; sig ab+cd=0123",
        );
        assert!(!out.contains("s3cr3t-Query-Value"), "{out}");
        assert!(!out.contains("ab%2Bcd%3D0123"), "{out}");
        assert!(!out.contains("ab+cd=0123"), "{out}");
        assert!(out.contains("channel=deploys"), "{out}");
    }

    #[test]
    fn a_url_password_nobody_registered_is_hidden_wherever_it_is_quoted() {
        // A URL validation refused (empty host), as its message quotes it.
        assert_eq!(
            scrub(r#"PROMETHEUS_URL is not a URL (got "https://u:pwPROMxyz123@")"#),
            r#"PROMETHEUS_URL is not a URL (got "https://u:[REDACTED]@")"#
        );
        // Two in one line; the user name and the host stay readable; an
        // `@` inside the password is part of it.
        assert_eq!(
            scrub(
                "from postgres://maily:p@ssw0rd@db:5432/maily to redis://:r3dis-pass@cache:6379/0"
            ),
            "from postgres://maily:[REDACTED]@db:5432/maily to redis://:[REDACTED]@cache:6379/0"
        );
        assert_eq!(
            scrub("image: https://bob:hunter2secret@reg.example/x:y"),
            "image: https://bob:[REDACTED]@reg.example/x:y"
        );
        // A token as the user name, with no password.
        assert_eq!(
            scrub("git clone https://ghp0Token0123456789abcd@github.com/maily/app"),
            "git clone https://[REDACTED]@github.com/maily/app"
        );
    }

    #[test]
    fn a_url_without_credentials_is_left_alone() {
        for clean in [
            "https://prom.example.invalid/api/v1/query?q=up",
            "ssh://git@github.com/maily/app",
            "https://medium.com/@maily/post",
            "mail ops@maily.ai about https://status.maily.ai",
            "postgres://maily:[REDACTED:DATABASE_URL]@db:5432/maily",
        ] {
            assert_eq!(scrub(clean), clean);
        }
    }

    #[test]
    fn a_short_or_blank_value_is_never_registered() {
        register("TEST_SHORT", "x");
        register("TEST_BLANK", "   ");
        register(
            "TEST_URL_WITH_SHORT_PASSWORD",
            "amqp://guest:guest@mq.example.com/",
        );
        let text = "x marks the guest spot, said the queue";
        assert_eq!(scrub(text), text);
        assert!(!long_enough("1234567") && long_enough("12345678"));
    }

    #[test]
    fn hides_bearer_tokens_and_credential_headers_of_anyone() {
        // Nothing registered: a snapshot must not keep a token that an env
        // file of another machine named.
        for (echo, token) in [
            (
                "Vercel answered 400: invalid request (headers: Authorization: Bearer unregistered-vercel-tok-11)",
                "unregistered-vercel-tok-11",
            ),
            (
                r#"{"message":"bad","request":{"headers":{"authorization":"Bearer glsa_unregistered_0123"}}}"#,
                "glsa_unregistered_0123",
            ),
            (
                "curl -H 'x-api-key: sk-ant-unregistered-77'",
                "sk-ant-unregistered-77",
            ),
            (
                "X-Vault-Token=hvs.unregistered-token",
                "hvs.unregistered-token",
            ),
            (
                "authorization: Basic dXNlcjpwYXNzd29yZA==",
                "dXNlcjpwYXNzd29yZA==",
            ),
            (
                "sent bearer eyJhbGciOiJIUzI1NiJ9.e30.sig-part",
                "eyJhbGciOiJIUzI1NiJ9",
            ),
        ] {
            let out = scrub(echo);
            assert!(!out.contains(token), "{echo} -> {out}");
            assert!(out.contains("[REDACTED]"), "{out}");
        }
        let out = scrub("Authorization: Bearer unregistered-vercel-tok-11\nnext line");
        assert_eq!(out, "Authorization: Bearer [REDACTED]\nnext line");
        let json = r#"{"h":{"authorization":"Bearer glsa_unregistered_0123","x":1}}"#;
        let out = scrub(json);
        assert!(
            serde_json::from_str::<serde_json::Value>(&out).is_ok(),
            "{out}"
        );
    }

    #[test]
    fn a_registered_token_behind_bearer_keeps_its_name() {
        register("TEST_GRAFANA_TOKEN", "glsa_registered-Token-42");
        let out = scrub("Authorization: Bearer glsa_registered-Token-42");
        assert_eq!(out, "Authorization: Bearer [REDACTED:TEST_GRAFANA_TOKEN]");
    }

    #[test]
    fn every_string_of_a_record_is_scrubbed_and_it_stays_json() {
        let mut doc = serde_json::json!({
            "failure": "deploy-frontend: 400 Authorization: Bearer rec0rd-t0ken-abcdef",
            "nested": [{"why": "Bearer rec0rd-t0ken-abcdef"}],
            "n": 3,
        });
        scrub_json(&mut doc);
        let text = doc.to_string();
        assert!(!text.contains("rec0rd-t0ken"), "{text}");
        assert_eq!(doc["n"], 3);
    }
}
