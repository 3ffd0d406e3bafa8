//! Logs: `tracing` to stderr, every line redacted before it is written.

use std::io::{self, IsTerminal, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::redact::scrub;

/// A writer that collects one event and writes it, redacted, on drop.
/// `tracing-subscriber` makes one writer per event, so an event's line is
/// scrubbed whole and a secret split across two writes is still caught.
pub struct RedactingWriter {
    buf: Vec<u8>,
}

impl Write for RedactingWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingWriter {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let _ = io::stderr().lock().write_all(scrub(&text).as_bytes());
    }
}

pub struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = RedactingWriter;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter { buf: Vec::new() }
    }
}

/// Set up logging: `-q` errors only, default warnings, `-v` info, `-vv`
/// debug, `-vvv` trace; `RUST_LOG` overrides.
pub fn init(verbose: u8, quiet: bool, color: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Stderr)
        .with_ansi(color && io::stderr().is_terminal())
        .with_target(false)
        .try_init();

    // A panic message can carry anything, secrets included.
    std::panic::set_hook(Box::new(|info| {
        let _ = writeln!(io::stderr(), "{}", scrub(&info.to_string()));
    }));
}
