//! Secret redaction for everything the tool prints.
//!
//! Validation never quotes a secret, but errors come from many places (a
//! driver echoing a connection string, a provider echoing a key). So every
//! byte bound for stdout, stderr, logs and reports passes through [`scrub`],
//! which replaces each registered secret (and the forms it can take inside a
//! URL or a JSON string) with `[REDACTED:<NAME>]`.

use std::borrow::Cow;
use std::sync::RwLock;

/// Registered secrets as (text to hide, variable name), longest first so a
/// secret that contains another is hidden whole.
static SECRETS: RwLock<Vec<(String, String)>> = RwLock::new(Vec::new());

/// Register a secret value under its variable's name.
pub fn register(name: &str, value: &str) {
    let mut forms = vec![value.to_string()];
    // A URL's password may be printed alone (e.g. by a database driver), and
    // percent-decoded; and JSON output escapes quotes and backslashes.
    if let Ok(url) = url::Url::parse(value) {
        if let Some(pw) = url.password() {
            forms.push(pw.to_string());
            if let Ok(decoded) = urlencoding_decode(pw) {
                forms.push(decoded);
            }
        }
        if url.username().len() >= 12 {
            // Long user names are tokens (e.g. Slack, Infura) rather than names.
            forms.push(url.username().to_string());
        }
    }
    if let Ok(json) = serde_json::to_string(value) {
        forms.push(json.trim_matches('"').to_string());
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for form in forms {
        if !form.is_empty() && !secrets.iter().any(|(f, _)| *f == form) {
            secrets.push((form, name.to_string()));
        }
    }
    secrets.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
}

fn urlencoding_decode(s: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes: Vec<u8> = url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())
        .unwrap_or_default();
    String::from_utf8(bytes)
}

/// The text with every registered secret replaced.
pub fn scrub(text: &str) -> Cow<'_, str> {
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
    }
}
