//! How the sentences the tool builds agree with what they count and name:
//! "a" or "an" by the sound of the next word, a noun in the plural unless
//! there is one, a verb by its subject's number, and lists joined as a
//! person would write them ("migrate, verify and monitor").
//!
//! Messages are read by people under pressure (a failed deploy, a refused
//! configuration); a message that stumbles ("a amqp URL", "1 dashboards")
//! reads as a tool that was not paying attention.

/// `word` with "a" or "an" before it, chosen by how the word is spoken:
/// `an amqp URL`, `a URL`, `an HTTP(S) URL`, `a 0x address`, `an 8 GiB disk`.
pub fn a_or_an(phrase: &str) -> String {
    format!("{} {phrase}", article(phrase))
}

/// The indefinite article for `phrase` ("a" or "an"), by its first
/// word's sound. Spoken-as-letters words (an initialism in capitals such as
/// `URL`, `HTTP`; a lowercase one without vowels such as `http`, `sql`) go
/// by the name of their first letter; numbers by how their first digits are
/// said (eight, eleven, eighteen); other words by their first letter, with
/// the usual exceptions (a `u` said "you", a silent `h`).
pub fn article(phrase: &str) -> &'static str {
    let word: String = phrase
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric())
        .collect();
    if vowel_sound(&word) { "an" } else { "a" }
}

fn vowel_sound(word: &str) -> bool {
    let Some(first) = word.chars().next() else {
        return false;
    };
    if first.is_ascii_digit() {
        let digits: String = word.chars().take_while(|c| c.is_ascii_digit()).collect();
        // "eight…", and "eleven"/"eighteen" (also as "eleven thousand").
        return digits.starts_with('8')
            || ((digits.starts_with("11") || digits.starts_with("18")) && digits.len() % 3 == 2);
    }
    if spoken_as_letters(word) {
        // The letters whose names start with a vowel sound: "an F", "an S".
        return "AEFHILMNORSX".contains(first.to_ascii_uppercase());
    }
    let lower = word.to_lowercase();
    const SAID_WITH_A_Y_OR_W: &[&str] = &[
        "uni", "use", "usa", "usi", "usu", "uti", "ure", "uri", "url", "uuid", "utf", "eu", "ewe",
        "one", "once",
    ];
    const SILENT_H: &[&str] = &["hour", "honest", "honor", "honour", "heir"];
    if SAID_WITH_A_Y_OR_W.iter().any(|p| lower.starts_with(p)) {
        return false;
    }
    if SILENT_H.iter().any(|p| lower.starts_with(p)) {
        return true;
    }
    matches!(lower.chars().next(), Some('a' | 'e' | 'i' | 'o' | 'u'))
}

/// A word read letter by letter: all capitals (`URL`, `S3`, `X`), or a
/// lowercase word with no vowel to say it by (`http`, `sql`, `ssh`).
fn spoken_as_letters(word: &str) -> bool {
    let letters: Vec<char> = word.chars().filter(|c| c.is_alphabetic()).collect();
    if letters.is_empty() {
        return false;
    }
    letters.iter().all(|c| c.is_uppercase())
        || !letters
            .iter()
            .any(|c| matches!(c.to_ascii_lowercase(), 'a' | 'e' | 'i' | 'o' | 'u' | 'y'))
}

/// `count` and the noun, singular for one: `1 dashboard`, `0 dashboards`,
/// `3 ServiceMonitors`.
pub fn count(n: usize, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// The regular English plural of a noun (a Kubernetes kind):
/// `NetworkPolicy` → `NetworkPolicies`, `Ingress` → `Ingresses`,
/// `Service` → `Services`.
pub fn plural(noun: &str) -> String {
    let lower = noun.to_ascii_lowercase();
    let before_last = lower.chars().rev().nth(1);
    if lower.ends_with('y') && before_last.is_some_and(|c| !"aeiou".contains(c)) {
        format!("{}ies", &noun[..noun.len() - 1])
    } else if ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|e| lower.ends_with(e))
    {
        format!("{noun}es")
    } else {
        format!("{noun}s")
    }
}

/// The verb agreeing with a subject of `n` things: `needs` for one, `need`
/// for more.
pub fn agree<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// Items as a list in a sentence: `a`, `a and b`, `a, b and c`.
pub fn and_list<S: AsRef<str>>(items: &[S]) -> String {
    match items {
        [] => String::new(),
        [one] => one.as_ref().to_string(),
        [init @ .., last] => format!(
            "{} and {}",
            init.iter()
                .map(|s| s.as_ref())
                .collect::<Vec<_>>()
                .join(", "),
            last.as_ref()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_article_follows_the_sound_of_the_next_word() {
        for (phrase, said) in [
            ("amqp URL", "an amqp URL"),
            ("postgres URL", "a postgres URL"),
            ("redis URL", "a redis URL"),
            ("http(s) URL", "an http(s) URL"),
            ("HTTP(S) URL", "an HTTP(S) URL"),
            ("URL", "a URL"),
            ("url", "a url"),
            ("SQL query", "an SQL query"),
            ("S3 bucket", "an S3 bucket"),
            ("GitHub owner/name", "a GitHub owner/name"),
            ("file:// or s3:// URL", "a file:// or s3:// URL"),
            ("0x address", "a 0x address"),
            ("8 GiB disk", "an 8 GiB disk"),
            ("11 second pause", "an 11 second pause"),
            ("110 second pause", "a 110 second pause"),
            ("18000 row table", "an 18000 row table"),
            ("integer >= 1", "an integer >= 1"),
            ("image tag", "an image tag"),
            ("unit", "a unit"),
            ("user", "a user"),
            ("umbrella", "an umbrella"),
            ("hour", "an hour"),
            ("host", "a host"),
            ("one-off job", "a one-off job"),
            ("duration", "a duration"),
            ("X", "an X"),
            ("B", "a B"),
        ] {
            assert_eq!(a_or_an(phrase), said, "{phrase:?}");
        }
    }

    #[test]
    fn a_noun_is_plural_unless_there_is_one() {
        assert_eq!(count(1, "dashboard", "dashboards"), "1 dashboard");
        assert_eq!(count(0, "dashboard", "dashboards"), "0 dashboards");
        assert_eq!(
            count(2, "ServiceMonitor", "ServiceMonitors"),
            "2 ServiceMonitors"
        );
    }

    #[test]
    fn a_verb_agrees_with_how_many_do_it() {
        assert_eq!(agree(1, "needs", "need"), "needs");
        assert_eq!(agree(2, "needs", "need"), "need");
    }

    #[test]
    fn lists_read_as_written_by_hand() {
        assert_eq!(and_list::<&str>(&[]), "");
        assert_eq!(and_list(&["migrate"]), "migrate");
        assert_eq!(and_list(&["migrate", "verify"]), "migrate and verify");
        assert_eq!(
            and_list(&["migrate", "monitor", "verify"]),
            "migrate, monitor and verify"
        );
    }

    #[test]
    fn kinds_take_their_plurals() {
        assert_eq!(plural("NetworkPolicy"), "NetworkPolicies");
        assert_eq!(plural("Ingress"), "Ingresses");
        assert_eq!(plural("Service"), "Services");
        assert_eq!(plural("Gateway"), "Gateways");
        assert_eq!(count(1, "Service", &plural("Service")), "1 Service");
    }
}
