//! Log lines on the serial console (which the host captures to a file).
//!
//! A minimal `tracing` subscriber instead of `tracing-subscriber`: PID 1 should stay small,
//! and one line per event with the guest uptime is all a console needs:
//! `[   1.234] aegis INFO message key=value`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use super::sys;

static DEBUG: AtomicBool = AtomicBool::new(false);

/// Installs the console logger (INFO and above until [`set_debug`]).
pub fn init() {
    let _ = tracing::subscriber::set_global_default(Console {
        next_span: AtomicU64::new(1),
    });
}

/// `aegis.debug` on the kernel command line: DEBUG events too.
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
    tracing::callsite::rebuild_interest_cache();
}

/// Prints `message` on the console regardless of the log level (fatal errors, boot banner).
pub fn say(message: &str) {
    let line = format!("[{:>9.3}] aegis {message}\n", sys::uptime());
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

struct Console {
    next_span: AtomicU64,
}

fn max_level() -> Level {
    if DEBUG.load(Ordering::Relaxed) {
        Level::DEBUG
    } else {
        Level::INFO
    }
}

impl Subscriber for Console {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= max_level()
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::from_level(max_level()))
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = Line::default();
        event.record(&mut line);
        say(&format!(
            "{:<5} {}{}",
            event.metadata().level(),
            line.message,
            line.fields
        ));
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}
