//! [`aegis_image::Progress`] on the terminal: an indicatif bar when stderr is a terminal,
//! plain lines (one per phase) otherwise, so logs of scripted runs stay readable.

use std::cell::RefCell;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct BuildProgress {
    /// What is being built, shown before every message ("kernel").
    what: String,
    bar: Option<ProgressBar>,
    last_message: RefCell<String>,
}

impl BuildProgress {
    pub fn new(what: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(spinner_style());
            bar.set_prefix(what.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        BuildProgress {
            what: what.to_string(),
            bar,
            last_message: RefCell::new(String::new()),
        }
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix:.bold} [{elapsed_precise}] {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner} {prefix:.bold} [{elapsed_precise}] {bar:30} {percent:>3}% {wide_msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl aegis_image::Progress for BuildProgress {
    fn set_message(&self, msg: &str) {
        let mut last = self.last_message.borrow_mut();
        if *last == msg {
            return;
        }
        *last = msg.to_string();
        match &self.bar {
            Some(bar) => bar.set_message(msg.to_string()),
            None => eprintln!("{}: {msg}", self.what),
        }
    }

    fn set_length(&self, len: u64) {
        if let Some(bar) = &self.bar {
            if bar.length().is_none() {
                bar.set_style(bar_style());
            }
            bar.set_length(len);
        }
    }

    fn set_position(&self, pos: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(pos);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for BuildProgress {
    fn drop(&mut self) {
        // A failed build may return without `finish`: do not leave a half-drawn bar.
        if let Some(bar) = &self.bar {
            if !bar.is_finished() {
                bar.finish_and_clear();
            }
        }
    }
}
