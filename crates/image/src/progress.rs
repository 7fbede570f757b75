//! Progress reporting for long builds, without tying the library to a terminal UI.

use std::fs;
use std::path::PathBuf;

/// Receives progress of a long build. The CLI implements it with an `indicatif` bar;
/// [`NoProgress`] ignores everything.
///
/// Builds report a message per phase ("Compiling kernel"), and for phases that count steps
/// a length and a moving position. A new phase may call `set_length` again.
pub trait Progress {
    /// What is happening now, in a few words.
    fn set_message(&self, msg: &str);
    /// How many steps the current phase is expected to take.
    fn set_length(&self, len: u64);
    /// How many steps of the current phase are done.
    fn set_position(&self, pos: u64);
    /// The build is over (successfully or not).
    fn finish(&self);
}

/// A [`Progress`] that reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn set_message(&self, _msg: &str) {}
    fn set_length(&self, _len: u64) {}
    fn set_position(&self, _pos: u64) {}
    fn finish(&self) {}
}

/// Counts the steps of a phase (compiler lines, package unpacks) against the count recorded
/// by the previous build of the same thing, or against an estimate the first time.
pub(crate) struct Steps<'a> {
    progress: &'a dyn Progress,
    record: PathBuf,
    count: u64,
    length: u64,
}

impl<'a> Steps<'a> {
    pub fn start(progress: &'a dyn Progress, record: PathBuf, estimate: u64) -> Self {
        let length = fs::read_to_string(&record)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(estimate);
        progress.set_length(length);
        progress.set_position(0);
        Steps {
            progress,
            record,
            count: 0,
            length,
        }
    }

    pub fn step(&mut self) {
        self.count += 1;
        if self.count >= self.length {
            // The estimate was short: keep the bar moving instead of pinning it at 100 %.
            self.length = self.count + self.count / 10 + 1;
            self.progress.set_length(self.length);
        }
        self.progress.set_position(self.count);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Record the real count for the next build's bar. Best effort: a missing record only
    /// makes the next bar less accurate.
    pub fn finish(self) {
        self.progress.set_length(self.count);
        self.progress.set_position(self.count);
        if let Err(e) = fs::write(&self.record, format!("{}\n", self.count)) {
            tracing::debug!(path = %self.record.display(), error = %e, "cannot record step count");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Records every call, for asserting on what a build reported.
    #[derive(Default)]
    pub struct Recorder(pub RefCell<Vec<String>>);

    impl Progress for Recorder {
        fn set_message(&self, msg: &str) {
            self.0.borrow_mut().push(format!("msg {msg}"));
        }
        fn set_length(&self, len: u64) {
            self.0.borrow_mut().push(format!("len {len}"));
        }
        fn set_position(&self, pos: u64) {
            self.0.borrow_mut().push(format!("pos {pos}"));
        }
        fn finish(&self) {
            self.0.borrow_mut().push("finish".into());
        }
    }

    #[test]
    fn steps_use_the_recorded_count_and_record_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("steps");
        let rec = Recorder::default();

        let mut steps = Steps::start(&rec, record.clone(), 3);
        for _ in 0..5 {
            steps.step();
        }
        assert_eq!(steps.count(), 5);
        steps.finish();
        assert_eq!(fs::read_to_string(&record).unwrap(), "5\n");
        let calls = rec.0.borrow().clone();
        assert_eq!(calls[0], "len 3");
        // The bar grew instead of overflowing.
        assert!(calls.contains(&"len 4".to_string()), "{calls:?}");

        let rec2 = Recorder::default();
        let _ = Steps::start(&rec2, record, 3);
        assert_eq!(rec2.0.borrow()[0], "len 5");
    }
}
