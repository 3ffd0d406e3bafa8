//! Vault references: a value of the form `vault:<path>#<key>`.
//!
//! Resolving them is the Vault client's job; this module only knows the form,
//! so a mistyped reference is caught offline with everything else.

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultRef {
    /// The secret's path, e.g. `secret/maily/production`.
    pub path: String,
    /// The key within the secret, e.g. `database_url`.
    pub key: String,
}

const PREFIX: &str = "vault:";

/// Whether a value is meant as a Vault reference (well-formed or not).
pub fn is_vault_ref(value: &str) -> bool {
    value.starts_with(PREFIX)
}

/// What is wrong with a reference's form; the text follows the subject
/// ("DATABASE_URL is a Vault reference without #<key>...") and never
/// quotes the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error("does not start with vault:")]
    NoPrefix,
    #[error("is a Vault reference without #<key>; write vault:<path>#<key>")]
    NoKey,
    #[error("is a Vault reference with an empty path; write vault:<path>#<key>")]
    EmptyPath,
    #[error(
        "is a Vault reference whose path has a leading, trailing or double /; write e.g. vault:secret/maily/production#key"
    )]
    PathSlashes,
    #[error("is a Vault reference whose path contains white space")]
    PathSpace,
    #[error("is a Vault reference with an empty key after #")]
    EmptyKey,
    #[error("is a Vault reference whose key has characters other than letters, digits, _ - .")]
    KeyChars,
}

/// Parse a reference; the error says what is wrong with its form.
pub fn parse(value: &str) -> Result<VaultRef, RefError> {
    let rest = value.strip_prefix(PREFIX).ok_or(RefError::NoPrefix)?;
    let Some((path, key)) = rest.split_once('#') else {
        return Err(RefError::NoKey);
    };
    if path.is_empty() {
        return Err(RefError::EmptyPath);
    }
    if path.starts_with('/') || path.ends_with('/') || path.contains("//") {
        return Err(RefError::PathSlashes);
    }
    if path.chars().any(char::is_whitespace) {
        return Err(RefError::PathSpace);
    }
    if key.is_empty() {
        return Err(RefError::EmptyKey);
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(RefError::KeyChars);
    }
    Ok(VaultRef {
        path: path.to_string(),
        key: key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_good_reference() {
        assert_eq!(
            parse("vault:secret/maily/production#database_url").unwrap(),
            VaultRef {
                path: "secret/maily/production".into(),
                key: "database_url".into()
            }
        );
    }

    #[test]
    fn names_each_malformation() {
        for (bad, why) in [
            ("vault:secret/maily", "without #<key>"),
            ("vault:#key", "empty path"),
            ("vault:/secret/x#key", "leading, trailing or double /"),
            ("vault:secret//x#key", "leading, trailing or double /"),
            ("vault:secret/x#", "empty key"),
            ("vault:secret/x#a key", "characters other than"),
            ("vault:sec ret/x#key", "white space"),
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
