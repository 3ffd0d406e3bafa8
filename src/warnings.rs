//! Every warning the tool logs, kept for the run's report.
//!
//! A warning printed on stderr alone is lost to a CI job that reads the JSON
//! report (Slack refusing a message, a lock taken over, a snapshot not
//! pruned). So the tool's own `WARN` events are also collected here, and
//! the report's `warnings[]` carries them, whatever `-q` or `RUST_LOG` let
//! through to stderr.

use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// At most this many are kept: a warning in a loop must not grow the
/// report without bound.
const MAX: usize = 100;

static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The layer that collects the tool's own warnings (not its libraries').
pub struct Collect;

struct Message(Option<String>);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = Some(format!("{value:?}"));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = Some(value.to_string());
        }
    }
}

impl<S: Subscriber> Layer<S> for Collect {
    fn on_event(&self, event: &Event<'_>, _cx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() != Level::WARN || !meta.target().starts_with("maily_deploy") {
            return;
        }
        let mut m = Message(None);
        event.record(&mut m);
        if let Some(text) = m.0 {
            record(&crate::redact::scrub(&text));
        }
    }
}

fn record(text: &str) {
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen.len() < MAX && !seen.iter().any(|w| w == text) {
        seen.push(text.to_string());
    }
}

/// Add the warnings collected so far that `list` does not have yet.
pub fn merge_into(list: &mut Vec<String>) {
    let seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    for w in seen.iter() {
        if !list.contains(w) {
            list.push(w.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn the_tools_warnings_are_kept_once_and_redacted_others_are_not() {
        crate::redact::register(
            "SLACK_WEBHOOK_URL",
            "https://hooks.example.invalid/T0/B0/sekr3tsekr3t",
        );
        let subscriber = tracing_subscriber::registry().with(Collect);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!("Slack answered 500 to a notification; the deploy goes on");
            tracing::warn!("Slack answered 500 to a notification; the deploy goes on");
            tracing::warn!("posting to https://hooks.example.invalid/T0/B0/sekr3tsekr3t failed");
            tracing::info!("not a warning");
            tracing::warn!(target: "kube_client", "a library's warning");
        });
        let mut list = vec!["from the configuration".to_string()];
        merge_into(&mut list);
        let slack = list
            .iter()
            .filter(|w| w.starts_with("Slack answered 500"))
            .count();
        assert_eq!(slack, 1, "{list:?}");
        assert!(
            list.iter()
                .any(|w| w.contains("[REDACTED:SLACK_WEBHOOK_URL]")),
            "{list:?}"
        );
        assert!(!list.iter().any(|w| w.contains("sekr3t")), "{list:?}");
        assert!(
            !list
                .iter()
                .any(|w| w.contains("not a warning") || w.contains("a library's")),
            "{list:?}"
        );
        assert_eq!(list[0], "from the configuration");
    }
}
