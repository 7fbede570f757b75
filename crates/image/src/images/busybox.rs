//! The busybox image: the host's static busybox, a symlink per applet at its usual path,
//! and the few /etc files a shell and `id` expect.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd::Tool;
use crate::error::{ImageError, IoContext, Result};
use crate::layout::create_dir_all;
use crate::progress::Progress;

use super::write_file;

/// Bump when the steps below change.
const RECIPE_VERSION: &str = "aegis-busybox-recipe-1";

const BUSYBOX: Tool = Tool::new("busybox", "build the busybox base image", "busybox-static");

/// Debian's busybox-static installs here; the dynamically linked `busybox` package too,
/// which is why the binary is checked for being static.
const HOST_BUSYBOX: &str = "/bin/busybox";

const FILES: [(&str, &str); 4] = [
    (
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    ),
    ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
    ("etc/shells", "/bin/sh\n/bin/ash\n"),
    (
        "etc/os-release",
        "NAME=\"Aegis busybox\"\nID=aegis-busybox\nPRETTY_NAME=\"Aegis busybox image\"\n",
    ),
];

fn host_busybox() -> Result<PathBuf> {
    let path = Path::new(HOST_BUSYBOX);
    if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        BUSYBOX.find()
    }
}

pub(super) fn recipe(part: &mut dyn FnMut(&[u8])) -> Result<()> {
    part(RECIPE_VERSION.as_bytes());
    for (path, content) in FILES {
        part(path.as_bytes());
        part(content.as_bytes());
    }
    let bin = host_busybox()?;
    // The binary itself, so a busybox upgrade rebuilds the image.
    part(&fs::read(&bin).ctx("read", &bin)?);
    Ok(())
}

pub(super) fn populate(tree: &Path, progress: &dyn Progress) -> Result<()> {
    progress.set_message("Assembling busybox image");
    let host = host_busybox()?;
    let binary = fs::read(&host).ctx("read", &host)?;
    if !is_static_elf(&binary) {
        return Err(ImageError::NotStatic {
            path: host,
            package: "busybox-static",
        });
    }
    if !super::is_root() {
        tracing::warn!(
            "building the busybox image as non-root: its files will be owned by this user's uid"
        );
    }
    let list = Command::new(&host)
        .arg("--list-full")
        .output()
        .map_err(|source| ImageError::Spawn {
            command: format!("{} --list-full", host.display()),
            source,
        })?;
    let applets = String::from_utf8_lossy(&list.stdout);
    let applets = applet_paths(&applets);
    progress.set_length(applets.len() as u64);

    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "var/tmp", "home",
    ] {
        create_dir_all(&tree.join(dir))?;
    }
    let dest = tree.join("bin/busybox");
    fs::write(&dest, &binary).ctx("write", &dest)?;
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))
        .ctx("set permissions of", &dest)?;
    for (i, applet) in applets.iter().enumerate() {
        let link = tree.join(applet);
        if let Some(parent) = link.parent() {
            create_dir_all(parent)?;
        }
        symlink("/bin/busybox", &link).ctx("create symlink", &link)?;
        progress.set_position(i as u64 + 1);
    }
    for (path, content) in FILES {
        write_file(tree, path, content, 0o644)?;
    }
    Ok(())
}

/// Applet paths from `busybox --list-full` ("usr/bin/env"), without busybox itself and
/// without `linuxrc`, which would only confuse a reader: PID 1 is the harness.
fn applet_paths(list: &str) -> Vec<&str> {
    list.lines()
        .map(str::trim)
        .filter(|p| p.contains('/') && !p.starts_with('/') && !p.contains(".."))
        .filter(|p| *p != "bin/busybox")
        .collect()
}

/// True for an ELF64 executable without a `PT_INTERP` program header (no dynamic loader).
fn is_static_elf(bin: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if bin.len() < 64 || &bin[..4] != b"\x7fELF" || bin[4] != 2 || bin[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bin[o], bin[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bin[32..40].try_into().unwrap_or_default()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).all(|i| {
        let off = phoff.saturating_add(i * phentsize);
        match bin.get(off..off + 4) {
            Some(t) => u32::from_le_bytes(t.try_into().unwrap_or_default()) != PT_INTERP,
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applet_list_is_filtered() {
        let list = "usr/bin/[\nbin/sh\nlinuxrc\nbin/busybox\n/abs\nusr/bin/env\n";
        assert_eq!(applet_paths(list), ["usr/bin/[", "bin/sh", "usr/bin/env"]);
    }

    #[test]
    fn static_elf_detection() {
        if let Ok(bb) = fs::read(HOST_BUSYBOX) {
            // Debian's busybox-static is what this machine has.
            assert!(is_static_elf(&bb));
        }
        let sh = fs::read("/bin/sh").unwrap();
        assert!(
            !is_static_elf(&sh),
            "/bin/sh is dynamically linked on Debian"
        );
        assert!(!is_static_elf(b"#!/bin/sh\n"));
    }
}
