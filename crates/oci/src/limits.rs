//! Size limits that keep a hostile or broken image from filling the host's disk.
//!
//! Both are checked while bytes stream, never after: a download stops at the first byte over
//! its bound and an unpack at the first byte over its cap, and what was written is removed.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

const GIB: u64 = 1 << 30;

/// Default for [`Limits::max_blob_bytes`]: 10 GiB.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 10 * GIB;
/// Default for [`Limits::max_layer_unpacked_bytes`]: 20 GiB.
pub const DEFAULT_MAX_LAYER_UNPACKED_BYTES: u64 = 20 * GIB;
/// The largest image configuration a pull accepts (it is parsed in memory). Real ones are a
/// few KiB; containerd allows 4 MiB for manifests.
pub(crate) const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Size limits of the image store.
///
/// The daemon passes them to [`crate::Store::with_limits`]; a store opened without them uses
/// [`Limits::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest blob (layer or config) a pull downloads, compressed, in bytes. A blob whose
    /// manifest declares more is refused before its download starts; a registry that sends
    /// more than the manifest declares is cut off at the declared size.
    pub max_blob_bytes: u64,
    /// The most one layer may unpack to, in bytes of uncompressed tar stream (which bounds the
    /// file data written and, at one header per 512 bytes, the number of files). Stops
    /// decompression bombs.
    pub max_layer_unpacked_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
            max_layer_unpacked_bytes: DEFAULT_MAX_LAYER_UNPACKED_BYTES,
        }
    }
}

/// A reader that fails once more than `cap` bytes have been read through it, and remembers
/// that it did (the failure surfaces through the tar reader as an ordinary I/O error).
pub(crate) struct CappedReader<R> {
    inner: R,
    left: u64,
    tripped: Rc<Cell<bool>>,
}

impl<R: Read> CappedReader<R> {
    pub(crate) fn new(inner: R, cap: u64) -> (Self, Rc<Cell<bool>>) {
        let tripped = Rc::new(Cell::new(false));
        (
            CappedReader {
                inner,
                left: cap,
                tripped: tripped.clone(),
            },
            tripped,
        )
    }
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Read one byte past the cap, so that a stream of exactly `cap` bytes passes.
        let want = buf
            .len()
            .min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            self.tripped.set(true);
            self.left = 0;
            return Err(io::Error::other("the layer's size limit was reached"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_reader_passes_exactly_cap_and_trips_beyond() {
        let data = vec![7u8; 1000];
        let (mut r, tripped) = CappedReader::new(&data[..], 1000);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 1000);
        assert!(!tripped.get());

        let (mut r, tripped) = CappedReader::new(&data[..], 999);
        assert!(r.read_to_end(&mut Vec::new()).is_err());
        assert!(tripped.get());
    }
}
