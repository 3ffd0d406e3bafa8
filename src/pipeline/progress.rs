//! Progress a phase reports while it runs (a traffic step, a live metric),
//! for the runner to hand to whoever displays the run.
//!
//! A phase cannot reach the observer (the runner holds it while the phase
//! runs), so it sends lines down a channel the runner drains as it waits.

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// One report of progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Something that happened (a step began, a measurement came in):
    /// kept, a line of its own everywhere.
    Event(String),
    /// How things stand right now (a clock ticking through a pause): shown
    /// live on a terminal, replaced by the next, never a line in a log.
    Status(String),
}

/// Where a phase says how it is getting on.
#[derive(Debug, Clone, Default)]
pub struct Progress(Option<UnboundedSender<Update>>);

impl Progress {
    /// A sender and the receiver the runner drains.
    pub fn channel() -> (Progress, UnboundedReceiver<Update>) {
        let (tx, rx) = unbounded_channel();
        (Progress(Some(tx)), rx)
    }

    /// Something that happened; logged when nobody displays the run.
    pub fn say(&self, line: impl Into<String>) {
        let line = line.into();
        match &self.0 {
            Some(tx) if tx.send(Update::Event(line.clone())).is_ok() => {}
            _ => tracing::info!("{line}"),
        }
    }

    /// How things stand now (shown live on a terminal only).
    pub fn status(&self, line: impl Into<String>) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(Update::Status(line.into()));
        }
    }
}
