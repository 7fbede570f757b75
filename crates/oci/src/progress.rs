//! Progress reporting for pulls.

/// Receives the progress of a pull; an implementation typically drives a progress bar.
///
/// All methods take `&self` so that one reporter can be shared; implementations use interior
/// mutability.
pub trait Progress: Send + Sync {
    /// What is being done now (e.g. which layer is being fetched).
    fn set_message(&self, message: &str);
    /// The total number of bytes the pull will fetch (sum of the blobs not already stored).
    fn set_length(&self, length: u64);
    /// `delta` more bytes were received.
    fn inc(&self, delta: u64);
    /// The pull is over (successfully or not).
    fn finish(&self);
}

/// A [`Progress`] that reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn set_message(&self, _message: &str) {}
    fn set_length(&self, _length: u64) {}
    fn inc(&self, _delta: u64) {}
    fn finish(&self) {}
}
