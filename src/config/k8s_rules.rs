//! What Kubernetes (and the Gateway API) accept in the fields a profile's
//! values end up in, checked offline so that a value past a field's limits
//! is refused by `validate`, with every other problem, before anything is
//! applied: not by the API server half-way through a deploy, and not by
//! quietly wrapping an int32.
//!
//! The rules are apimachinery's (`IsDNS1123Label`, `IsDNS1035Label`,
//! `IsDNS1123Subdomain`, `IsValidLabelValue`) and the Gateway API CRDs'
//! (`Hostname`, `HTTPPathMatch`). Messages say which rule a value breaks and
//! never quote it: the caller names the field.

/// The largest int32: replicas, HPA bounds and `...Seconds` fields are
/// int32 in the Kubernetes API.
pub const MAX_INT32: u64 = i32::MAX as u64;

/// The rule a value breaks, as the end of a sentence whose subject the
/// caller names ("namespace is empty").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("is empty")]
    Empty,
    #[error("is {len} characters long, over {max}")]
    TooLong { len: usize, max: usize },
    #[error("may hold only lowercase letters, digits and -")]
    LabelChars,
    #[error("must start and end with a letter or digit")]
    LabelEnds,
    #[error("must start with a lowercase letter")]
    LetterFirst,
    #[error(
        "may hold only lowercase letters, digits, - and ., each dot-separated part starting and ending with a letter or digit"
    )]
    SubdomainChars,
    #[error("is {len} characters long, over the 63 a label value may have")]
    LabelValueTooLong { len: usize },
    #[error(
        "is not a valid label value (letters, digits, - _ ., starting and ending with a letter or digit)"
    )]
    LabelValueChars,
    #[error("is not a host name: it {0}")]
    NotAHostName(Box<RuleError>),
    #[error("is an IP address; the route's hostnames must be names")]
    IpAddress,
    #[error("must start with /")]
    PathStart,
    #[error(
        "is not a plain path prefix (no white space, //, /./, /../, %2f, # or ?, not ending in /. or /..)"
    )]
    PathChars,
}

fn label_chars_ok(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A DNS-1123 label: at most 63 lowercase letters, digits and `-`,
/// starting and ending with a letter or digit (namespaces, container
/// names). It may start with a digit: Kubernetes accepts `12345` as a
/// namespace.
pub fn dns1123_label(s: &str) -> Result<(), RuleError> {
    if s.is_empty() {
        return Err(RuleError::Empty);
    }
    if s.len() > 63 {
        return Err(RuleError::TooLong {
            len: s.len(),
            max: 63,
        });
    }
    if !label_chars_ok(s) {
        return Err(RuleError::LabelChars);
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(RuleError::LabelEnds);
    }
    Ok(())
}

/// A DNS-1035 label: a DNS-1123 label that starts with a letter (Service
/// names).
pub fn dns1035_label(s: &str) -> Result<(), RuleError> {
    dns1123_label(s)?;
    if !s.as_bytes()[0].is_ascii_lowercase() {
        return Err(RuleError::LetterFirst);
    }
    Ok(())
}

/// A DNS-1123 subdomain: at most 253 characters, DNS-1123 labels joined by
/// `.` (most object names: Secrets, Gateways).
pub fn dns1123_subdomain(s: &str) -> Result<(), RuleError> {
    if s.is_empty() {
        return Err(RuleError::Empty);
    }
    if s.len() > 253 {
        return Err(RuleError::TooLong {
            len: s.len(),
            max: 253,
        });
    }
    for part in s.split('.') {
        if part.is_empty() || !label_chars_ok(part) || part.starts_with('-') || part.ends_with('-')
        {
            return Err(RuleError::SubdomainChars);
        }
    }
    Ok(())
}

/// A label value: at most 63 letters, digits, `-`, `_` and `.`, starting
/// and ending with a letter or digit (or empty).
pub fn label_value(s: &str) -> Result<(), RuleError> {
    if s.len() > 63 {
        return Err(RuleError::LabelValueTooLong { len: s.len() });
    }
    let b = s.as_bytes();
    let chars_ok = b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    let ends_ok =
        b.is_empty() || (b[0].is_ascii_alphanumeric() && b[b.len() - 1].is_ascii_alphanumeric());
    if !chars_ok || !ends_ok {
        return Err(RuleError::LabelValueChars);
    }
    Ok(())
}

/// A Gateway API hostname: a DNS-1123 subdomain of at most 253
/// characters, optionally `*.` first; no IP address, no port.
pub fn hostname(s: &str) -> Result<(), RuleError> {
    let bare = s.strip_prefix("*.").unwrap_or(s);
    dns1123_subdomain(bare).map_err(|why| RuleError::NotAHostName(Box::new(why)))?;
    if bare
        .split('.')
        .all(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(RuleError::IpAddress);
    }
    Ok(())
}

/// A Gateway API `PathPrefix` value: starts with `/`, at most 1024
/// characters, no `//`, `/./`, `/../`, `%2f`, `#` or `?`, and not ending in
/// `/.` or `/..` (the CRD's validation rules), nothing YAML would split.
pub fn route_path(s: &str) -> Result<(), RuleError> {
    if !s.starts_with('/') {
        return Err(RuleError::PathStart);
    }
    if s.len() > 1024 {
        return Err(RuleError::TooLong {
            len: s.len(),
            max: 1024,
        });
    }
    let lower = s.to_ascii_lowercase();
    if s.chars().any(char::is_whitespace)
        || ["//", "/./", "/../", "%2f", "#", "?"]
            .iter()
            .any(|bad| lower.contains(bad))
        || s.ends_with("/.")
        || s.ends_with("/..")
    {
        return Err(RuleError::PathChars);
    }
    Ok(())
}

/// Whether YAML reads `s`, written unquoted as the manifests write
/// `${NAMESPACE}` and the like, as the text itself: `12345`, `1e3`,
/// `true` and `null` are valid names to Kubernetes but a number, a bool
/// and a null to the YAML parser that reads the rendered manifests.
pub fn reads_as_text(s: &str) -> bool {
    serde_saphyr::from_str::<serde_json::Value>(&format!("v: {s}\n"))
        .ok()
        .and_then(|doc| doc.get("v").cloned())
        == Some(serde_json::Value::String(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains_follow_apimachinery() {
        assert!(dns1123_label("maily-production").is_ok());
        assert!(dns1123_label("12345").is_ok(), "Kubernetes accepts it");
        assert!(dns1123_label(&"a".repeat(63)).is_ok());
        for bad in ["", "Maily", "a_b", "-a", "a-", "a.b"] {
            assert!(dns1123_label(bad).is_err(), "{bad:?}");
        }
        assert!(
            dns1123_label(&"a".repeat(64))
                .unwrap_err()
                .to_string()
                .contains("over 63")
        );
        assert!(dns1035_label("api").is_ok());
        assert!(
            dns1035_label("9api")
                .unwrap_err()
                .to_string()
                .contains("start with a lowercase letter")
        );
        assert!(dns1123_subdomain("maily-public.gateways").is_ok());
        for bad in ["a..b", ".a", "A.b", "a-.b"] {
            assert!(dns1123_subdomain(bad).is_err(), "{bad:?}");
        }
        assert!(
            dns1123_subdomain(&"a.".repeat(127)).is_err(),
            "254 characters"
        );
    }

    #[test]
    fn label_values_follow_apimachinery() {
        for good in ["", "v1.4.2", "sha-1a2b3c4", "V_1", &"a".repeat(63)] {
            assert!(label_value(good).is_ok(), "{good:?}");
        }
        for bad in ["_v1", "v1-", "v1 2", "v1/2"] {
            assert!(label_value(bad).is_err(), "{bad:?}");
        }
        assert!(
            label_value(&"a".repeat(64))
                .unwrap_err()
                .to_string()
                .contains("over the 63")
        );
    }

    #[test]
    fn hostnames_and_paths_follow_the_gateway_api() {
        assert!(hostname("api.maily.ai").is_ok());
        assert!(hostname("*.maily.ai").is_ok());
        for bad in [
            "API.maily.ai",
            "api.maily.ai:443",
            "https://api",
            "10.0.0.1",
            "",
        ] {
            assert!(hostname(bad).is_err(), "{bad:?}");
        }
        assert!(route_path("/").is_ok());
        assert!(route_path("/api/v1").is_ok());
        for bad in [
            "api", "/a//b", "/a/../b", "/a/.", "/a%2Fb", "/a#b", "/a?b", "/a b",
        ] {
            assert!(route_path(bad).is_err(), "{bad:?}");
        }
        assert!(route_path(&format!("/{}", "a".repeat(1024))).is_err());
    }

    #[test]
    fn what_yaml_would_read_as_something_else() {
        for text in ["maily-staging", "api", "v1.4.2", "gateway-system"] {
            assert!(reads_as_text(text), "{text}");
        }
        for other in ["12345", "1e3", "0x1f", "true", "null", "1.0", "~"] {
            assert!(!reads_as_text(other), "{other}");
        }
    }
}
