//! Progress a phase reports while it runs (a traffic step, a live metric),
//! for the runner to hand to whoever displays the run.
//!
//! A phase cannot reach the observer (the runner holds it while the phase
//! runs), so it sends lines down a channel the runner drains as it waits.

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// Where a phase says how it is getting on.
#[derive(Debug, Clone, Default)]
pub struct Progress(Option<UnboundedSender<String>>);

impl Progress {
    /// A sender and the receiver the runner drains.
    pub fn channel() -> (Progress, UnboundedReceiver<String>) {
        let (tx, rx) = unbounded_channel();
        (Progress(Some(tx)), rx)
    }

    /// One line of progress; logged when nobody displays the run.
    pub fn say(&self, line: impl Into<String>) {
        let line = line.into();
        match &self.0 {
            Some(tx) if tx.send(line.clone()).is_ok() => {}
            _ => tracing::info!("{line}"),
        }
    }
}
