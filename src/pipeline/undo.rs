//! What a run changed that users see, recorded as the run changes it, and
//! the one walk that puts it back: for a failed run (its finish), for a run
//! that died (the next run, or `abort`). As Helm's failed upgrade runs its
//! rollback action, the lifecycle runs this journal; it does not need to
//! know which phase did what.

use serde::{Deserialize, Serialize};

use super::context::Context;
use super::snapshot::Snapshot;
use crate::k8s::apply::Applier;
use crate::k8s::values::Release;
use crate::phases::deploy_frontend::{FrontendRecord, undo_promotion};

/// One change users see, as the journal keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Undo {
    /// The platform's shared objects (settings, network policies, the
    /// backup CronJob) written by deploy-backend: put back as the last good
    /// deployment left them.
    Platform,
    /// Routes, stable Services' selectors or worker replicas moved
    /// (shift-traffic): put back where the snapshot's `before` had them.
    Routes,
    /// The frontend promoted: the previous production deployment goes back.
    Frontend,
}

/// Every change a run can leave, in the order runs make them: what a run
/// that died without a word must be assumed to have done. Each step is
/// harmless where its change never happened (routes already where `before`
/// had them, a frontend never promoted).
pub const EVERYTHING: &[Undo] = &[Undo::Platform, Undo::Routes, Undo::Frontend];

/// Record that the run made a change users see.
pub fn record(cx: &mut Context, change: Undo) {
    if !cx.undo.contains(&change) {
        cx.undo.push(change);
    }
}

/// Put back `steps`, in the order the changes were made: the frontend
/// follows the backend back as it followed it forward. Every step is tried
/// even when one fails; the frontend record comes back as it now stands,
/// with the error of whatever could not be put back.
pub async fn put_back(
    cx: &Context,
    applier: &Applier,
    steps: &[Undo],
    snapshot: &Snapshot,
    release: &Release,
    frontend: Option<FrontendRecord>,
) -> (Option<FrontendRecord>, Option<anyhow::Error>) {
    let mut error: Option<anyhow::Error> = None;
    let mut join = |e: anyhow::Error| {
        error = Some(match error.take() {
            Some(first) => first.context(format!("{e:#}")),
            None => e,
        });
    };
    let mut frontend = frontend;
    for step in steps {
        match step {
            Undo::Platform => {
                if let Err(e) = super::lifecycle::platform_back(cx, applier, snapshot).await {
                    join(e);
                }
            }
            Undo::Routes => {
                if let Err(e) =
                    super::lifecycle::restore_before(cx, applier, snapshot, release).await
                {
                    join(e);
                }
            }
            Undo::Frontend => {
                if let Some(record) = frontend.clone() {
                    // Users of another run's release (one that took the lock
                    // while the routes went back, however fresh the lease
                    // looked) must not get this frontend put back under
                    // them: the API server is asked.
                    if let Err(e) = applier.confirm_lock().await {
                        join(e.context("the frontend was not put back"));
                        continue;
                    }
                    match undo_promotion(&cx.config.vars, &record).await {
                        Ok(r) => frontend = Some(r),
                        Err(e) => join(e.context("putting the frontend back")),
                    }
                }
            }
        }
    }
    (frontend, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_reads_as_it_is_written() {
        let text = serde_json::to_string(EVERYTHING).unwrap();
        assert_eq!(text, r#"["platform","routes","frontend"]"#);
        let back: Vec<Undo> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, EVERYTHING);
    }
}
