//! SIGINT and SIGTERM: one listener for the whole process, latched.
//!
//! Once a process has replaced the default handler, a signal that arrives
//! while nobody listens is lost: a fresh `tokio::signal` listener per phase
//! (or per wait) sees only signals sent after it was made, so a CI job
//! cancelled between two listeners deployed anyway. Here the handlers are
//! registered once, before the command takes the deploy lock, and the first
//! signal is kept: whoever asks later, [`requested`] answers at once.
//!
//! Commands that only read (status, history, a dry run) do not install it,
//! so Ctrl-C ends them the usual way.

use std::sync::OnceLock;

use tokio::sync::watch;

/// Which signal stopped the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The first signal received, kept for whoever asks later.
pub struct Latch(watch::Sender<Option<Signal>>);

impl Default for Latch {
    fn default() -> Self {
        Latch(watch::channel(None).0)
    }
}

impl Latch {
    /// Record a signal: the first one counts; later ones are logged, since
    /// the run is already putting things back.
    pub fn deliver(&self, signal: Signal) {
        let first = self.0.send_if_modified(|now| {
            if now.is_none() {
                *now = Some(signal);
                true
            } else {
                false
            }
        });
        if !first {
            tracing::warn!(
                "{signal} again: still putting things back and releasing the lock; SIGKILL stops at once (the next run finishes what this one leaves)"
            );
        }
    }

    /// The signal received so far, if any.
    pub fn received(&self) -> Option<Signal> {
        *self.0.borrow()
    }

    /// Resolves when a signal has been received, at once if one already was.
    pub async fn requested(&self) -> Signal {
        let mut rx = self.0.subscribe();
        // The borrow ends here, before any other await: a future holding it
        // would not be `Send`.
        let got = rx
            .wait_for(Option::is_some)
            .await
            .map(|s| s.unwrap_or(Signal::Interrupt));
        match got {
            Ok(s) => s,
            // The sender lives in `self`, which outlives this borrow.
            Err(_) => std::future::pending().await,
        }
    }

    /// Run `work` unless a signal comes first (or came already); the error
    /// names the signal and `what` was being done, with the exit code of an
    /// interruption.
    pub async fn cancellable<T>(
        &self,
        what: &str,
        work: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        tokio::select! {
            biased;
            s = self.requested() => Err(crate::error::fail(
                crate::error::Kind::Interrupted,
                format!("interrupted by {s} during {what}"),
            )),
            r = work => r,
        }
    }
}

static LATCH: OnceLock<Latch> = OnceLock::new();

/// The process's latch.
fn latch() -> &'static Latch {
    LATCH.get_or_init(Latch::default)
}

/// Register the handlers (idempotent). Must run inside the tokio runtime;
/// the registration itself is synchronous, so a signal sent right after
/// this returns is caught.
pub fn install() -> anyhow::Result<()> {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use anyhow::Context as _;
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        tokio::spawn(async move {
            loop {
                let got = tokio::select! {
                    Some(()) = int.recv() => Signal::Interrupt,
                    Some(()) = term.recv() => Signal::Terminate,
                    else => return,
                };
                latch().deliver(got);
            }
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async {
        while tokio::signal::ctrl_c().await.is_ok() {
            latch().deliver(Signal::Interrupt);
        }
    });
    let _ = INSTALLED.set(());
    Ok(())
}

/// The signal this process received so far, if any.
pub fn received() -> Option<Signal> {
    latch().received()
}

/// Resolves when this process has received a signal. Never resolves in a
/// process that did not [`install`] (nothing delivers to the latch).
pub async fn requested() -> Signal {
    latch().requested().await
}

/// [`Latch::cancellable`] on the process's latch.
pub async fn cancellable<T>(
    what: &str,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    latch().cancellable(what, work).await
}

/// Work that puts back what a stopped step left half done (a restore's
/// schemas set aside), started when that step was dropped mid-way: a
/// future cannot run async code as it is dropped, so it hands the work
/// over here, and the runner waits for it before it releases the lock.
static PUT_BACKS: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>> =
    std::sync::Mutex::new(Vec::new());

/// Start `work` now, on the runtime; [`put_backs_done`] waits for it.
/// Outside a runtime (which no caller is) it is logged and not run.
pub fn put_back_later(what: &str, work: impl std::future::Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            let task = rt.spawn(work);
            PUT_BACKS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(task);
        }
        Err(_) => tracing::error!("{what} was stopped mid-way and could not be put back"),
    }
}

/// Waits for every put-back started so far.
pub async fn put_backs_done() {
    loop {
        let pending: Vec<_> =
            std::mem::take(&mut *PUT_BACKS.lock().unwrap_or_else(|e| e.into_inner()));
        if pending.is_empty() {
            return;
        }
        for task in pending {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_that_ends_first_is_not_disturbed() {
        let latch = Latch::default();
        let got = latch
            .cancellable("validate", async { Ok(7) })
            .await
            .unwrap();
        assert_eq!(got, 7);
    }

    #[tokio::test]
    async fn a_signal_before_anyone_waits_is_not_lost() {
        let latch = Latch::default();
        assert_eq!(latch.received(), None);
        latch.deliver(Signal::Terminate);
        // Asked afterwards, by a waiter that did not exist when it came.
        let got = tokio::time::timeout(std::time::Duration::from_secs(1), latch.requested())
            .await
            .expect("a latched signal answers at once");
        assert_eq!(got, Signal::Terminate);
        // A second signal does not replace the first.
        latch.deliver(Signal::Interrupt);
        assert_eq!(latch.received(), Some(Signal::Terminate));
        let err = latch
            .cancellable(
                "deploy-backend",
                std::future::pending::<anyhow::Result<()>>(),
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "interrupted by SIGTERM during deploy-backend"
        );
        assert_eq!(
            crate::error::exit_code_of(&err),
            crate::exit_code::INTERRUPTED
        );
    }
}
