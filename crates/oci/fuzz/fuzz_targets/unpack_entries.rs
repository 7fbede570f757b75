//! Layers built from structured entries (paths with `..`, absolute paths, symlinks and hard
//! links to anywhere, whiteouts, long names, huge declared sizes), applied as two layers so
//! that a link planted by the first can be used by the second: nothing may appear outside
//! the root.
#![no_main]

use arbitrary::Arbitrary;

#[path = "../common/contained.rs"]
mod contained;

#[derive(Debug, Arbitrary)]
enum Kind {
    File,
    Dir,
    Symlink,
    HardLink,
    Fifo,
}

#[derive(Debug, Arbitrary)]
struct Entry {
    path: String,
    kind: Kind,
    link: String,
    mode: u16,
    data: Vec<u8>,
    /// Lie about the size in the header (a huge or short declared size).
    declared_size: Option<u64>,
    /// Write the path as a PAX record instead of the header's name field (long names).
    pax_path: bool,
}

#[derive(Debug, Arbitrary)]
struct Input {
    first: Vec<Entry>,
    second: Vec<Entry>,
    overlay: bool,
}

fn build(entries: &[Entry]) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    for e in entries.iter().take(64) {
        let mut h = tar::Header::new_gnu();
        let kind = match e.kind {
            Kind::File => tar::EntryType::Regular,
            Kind::Dir => tar::EntryType::Directory,
            Kind::Symlink => tar::EntryType::Symlink,
            Kind::HardLink => tar::EntryType::Link,
            Kind::Fifo => tar::EntryType::Fifo,
        };
        h.set_entry_type(kind);
        h.set_mode(u32::from(e.mode) & 0o7777);
        let data: &[u8] = if kind == tar::EntryType::Regular {
            &e.data
        } else {
            &[]
        };
        h.set_size(e.declared_size.unwrap_or(data.len() as u64));
        // Written raw: the tar crate's setters refuse `..`, which is exactly what is wanted here.
        if e.pax_path {
            let _ = out.append_pax_extensions([("path", e.path.as_bytes())]);
        } else {
            let name = e.path.as_bytes();
            let n = name.len().min(100);
            h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
        }
        let link = e.link.as_bytes();
        let n = link.len().min(100);
        h.as_old_mut().linkname[..n].copy_from_slice(&link[..n]);
        h.set_cksum();
        let _ = out.append(&h, data);
    }
    out.into_inner().unwrap_or_default()
}

libfuzzer_sys::fuzz_target!(|input: Input| {
    let layers = [build(&input.first), build(&input.second)];
    contained::unpack_layers_and_check(&layers, input.overlay);
});
