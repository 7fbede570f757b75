//! Unpacks fuzzed layers into a fixed scratch root and checks that nothing appeared outside it.
//!
//! The scratch directory has a fixed path (`$TMPDIR/aegis-oci-fuzz`) so that seeds can aim
//! absolute symlinks and hard links at its `outside/` directory.

use std::fs;
use std::path::{Path, PathBuf};

/// Layers are capped small: the target is the unpacker's logic, not the disk.
const CAP: u64 = 4 << 20;

fn scratch() -> PathBuf {
    std::env::temp_dir().join("aegis-oci-fuzz")
}

fn reset(base: &Path) {
    let _ = fs::remove_dir_all(base);
    fs::create_dir_all(base.join("root")).unwrap();
    fs::create_dir_all(base.join("outside")).unwrap();
    fs::write(base.join("outside/canary"), "canary").unwrap();
}

fn check(base: &Path) {
    let mut names: Vec<String> = fs::read_dir(base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["layer", "outside", "root"],
        "something was written next to the root"
    );
    let outside: Vec<_> = fs::read_dir(base.join("outside"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        outside,
        ["canary"],
        "something was written outside the root"
    );
    let canary = base.join("outside/canary");
    assert!(
        fs::symlink_metadata(&canary).unwrap().is_file(),
        "the canary was replaced"
    );
    assert_eq!(
        fs::read(&canary).unwrap(),
        b"canary",
        "the canary was overwritten"
    );
}

/// Unpacks `data` (a tar, plain or compressed) as one layer.
pub fn unpack_and_check(data: &[u8], overlay: bool) {
    unpack_layers_and_check(&[data.to_vec()], overlay);
}

/// Unpacks `layers` in order into the same root.
pub fn unpack_layers_and_check(layers: &[Vec<u8>], overlay: bool) {
    let base = scratch();
    reset(&base);
    for layer in layers {
        let file = base.join("layer");
        fs::write(&file, layer).unwrap();
        // Errors are expected (refused entries, bad archives, the cap); panics and escapes
        // are not.
        let _ = aegis_oci::fuzzing::unpack_file(&file, &base.join("root"), overlay, CAP);
        check(&base);
    }
}
