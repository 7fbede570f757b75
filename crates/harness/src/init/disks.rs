//! Finding the guest's disks by virtio-blk serial.
//!
//! The VMM attaches the base image with `serial=aegis-root` and the scratch disk with
//! `serial=aegis-scratch` (names overridable with `aegis.root=` / `aegis.scratch=`); the
//! kernel shows them in `/sys/block/vdX/serial`. Only when no disk has a serial file at all
//! (a VMM that cannot set serials) does the harness fall back to order: root = `vda`,
//! scratch = `vdb`.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::cmdline::BootArgs;
use super::InitError;

/// How long to wait for the root disk to appear (virtio probing is normally done before
/// PID 1 starts; this only covers slow hosts).
const APPEAR_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Disks {
    /// Read-only layers, bottom first; the first is the root disk.
    pub layers: Vec<PathBuf>,
    pub scratch: Option<PathBuf>,
}

/// Serial of disk layer `i` above the root disk (must match the host's naming).
pub fn layer_serial(i: usize) -> String {
    format!("aegis-l{i}")
}

struct BlockDev {
    name: String,
    serial: Option<String>,
}

fn scan() -> Vec<BlockDev> {
    let mut devs: Vec<BlockDev> = fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("vd") {
                return None;
            }
            let serial = fs::read_to_string(e.path().join("serial"))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty());
            Some(BlockDev { name, serial })
        })
        .collect();
    // vda, vdb, ..., vdz, vdaa: shorter names first.
    devs.sort_by(|a, b| (a.name.len(), &a.name).cmp(&(b.name.len(), &b.name)));
    devs
}

fn pick(devs: &[BlockDev], serial: &str, fallback: &str) -> Option<PathBuf> {
    let by_serial = devs.iter().find(|d| d.serial.as_deref() == Some(serial));
    let no_serials = devs.iter().all(|d| d.serial.is_none());
    by_serial
        .or_else(|| {
            no_serials
                .then(|| devs.iter().find(|d| d.name == fallback))
                .flatten()
        })
        .map(|d| PathBuf::from("/dev").join(&d.name))
}

/// Finds the root and (optional) scratch disks.
pub fn find(args: &BootArgs) -> Result<Disks, InitError> {
    let started = Instant::now();
    loop {
        let devs = scan();
        if let Some(root) = pick(&devs, &args.root_serial, "vda") {
            let mut layers = vec![root];
            let mut missing = None;
            for i in 1..args.layers {
                let serial = layer_serial(i);
                let found = devs.iter().find(|d| d.serial.as_deref() == Some(&serial));
                match found {
                    Some(d) => layers.push(PathBuf::from("/dev").join(&d.name)),
                    None => {
                        missing = Some((i, serial));
                        break;
                    }
                }
            }
            match missing {
                None => {
                    let scratch = pick(&devs, &args.scratch_serial, "vdb");
                    for d in &devs {
                        tracing::debug!(disk = d.name, serial = ?d.serial, "block device");
                    }
                    return Ok(Disks { layers, scratch });
                }
                Some((index, serial)) if started.elapsed() > APPEAR_TIMEOUT => {
                    return Err(InitError::NoLayerDisk { index, serial });
                }
                Some(_) => {}
            }
        }
        if started.elapsed() > APPEAR_TIMEOUT {
            return Err(InitError::NoRootDisk {
                serial: args.root_serial.clone(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str, serial: Option<&str>) -> BlockDev {
        BlockDev {
            name: name.into(),
            serial: serial.map(Into::into),
        }
    }

    #[test]
    fn by_serial_whatever_the_order() {
        let devs = [
            dev("vda", Some("aegis-scratch")),
            dev("vdb", Some("aegis-root")),
        ];
        assert_eq!(pick(&devs, "aegis-root", "vda"), Some("/dev/vdb".into()));
        assert_eq!(pick(&devs, "aegis-scratch", "vdb"), Some("/dev/vda".into()));
        assert_eq!(pick(&devs, "other", "vdb"), None);
    }

    #[test]
    fn by_order_only_without_serials() {
        let devs = [dev("vda", None), dev("vdb", None)];
        assert_eq!(pick(&devs, "aegis-root", "vda"), Some("/dev/vda".into()));
        assert_eq!(pick(&devs, "aegis-scratch", "vdb"), Some("/dev/vdb".into()));
        let one = [dev("vda", None)];
        assert_eq!(pick(&one, "aegis-scratch", "vdb"), None);
    }
}
