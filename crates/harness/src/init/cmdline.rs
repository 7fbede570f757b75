//! The `aegis.*` arguments of the kernel command line.
//!
//! | argument | meaning | default |
//! |---|---|---|
//! | `aegis.channel=vport:NAME` | virtio-serial port named NAME (QEMU) | `vport:aegis.0` |
//! | `aegis.channel=vsock:CID:PORT` | dial AF_VSOCK CID:PORT (Firecracker, libkrun) | |
//! | `aegis.root=SERIAL` | virtio-blk serial of the base image disk | `aegis-root` |
//! | `aegis.layers=N` | disk layers stacked by overlayfs: the root disk, then serials `aegis-l1`..`aegis-l<N-1>` | `1` |
//! | `aegis.scratch=SERIAL` | serial of the writable scratch disk (optional) | `aegis-scratch` |
//! | `aegis.hostname=NAME` | guest host name | `aegis` |
//! | `aegis.debug` | debug logging on the console | off |
//! | `aegis.workspace=TAG` | mount the virtio-fs share TAG at `/workspace` | none |
//! | `aegis.workspace_ro` | mount it read-only (the host enforces it too) | off |

use super::InitError;

/// How the harness reaches the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelSpec {
    /// A virtio-serial port, found by name in `/sys/class/virtio-ports`.
    Vport(String),
    /// An AF_VSOCK stream to `cid:port`, dialled by the guest.
    Vsock { cid: u32, port: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootArgs {
    pub channel: ChannelSpec,
    pub root_serial: String,
    /// Number of read-only disk layers (`aegis.layers=N`): the bottom one has serial
    /// `root_serial`, layer `i` (1..N) serial `aegis-l<i>`.
    pub layers: usize,
    pub scratch_serial: String,
    pub hostname: String,
    pub debug: bool,
    /// virtio-fs tag of the workspace share, mounted at `/workspace`.
    pub workspace: Option<String>,
    /// Mount the workspace read-only (`aegis.workspace_ro`).
    pub workspace_read_only: bool,
}

impl Default for BootArgs {
    fn default() -> Self {
        BootArgs {
            channel: ChannelSpec::Vport("aegis.0".into()),
            root_serial: "aegis-root".into(),
            layers: 1,
            scratch_serial: "aegis-scratch".into(),
            hostname: "aegis".into(),
            debug: false,
            workspace: None,
            workspace_read_only: false,
        }
    }
}

/// Most disk layers a guest stacks (a virtio-mmio machine has 24 device slots).
pub const MAX_LAYERS: usize = 20;

/// Parses the `aegis.*` words of `/proc/cmdline`; other words are the kernel's business.
pub fn parse(cmdline: &str) -> Result<BootArgs, InitError> {
    let mut args = BootArgs::default();
    for word in cmdline.split_whitespace() {
        let Some(arg) = word.strip_prefix("aegis.") else {
            continue;
        };
        let (key, value) = match arg.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (arg, None),
        };
        let bad = || InitError::Cmdline(word.to_string());
        match (key, value) {
            ("channel", Some(v)) => args.channel = parse_channel(v).ok_or_else(bad)?,
            ("root", Some(v)) if !v.is_empty() => args.root_serial = v.into(),
            ("scratch", Some(v)) if !v.is_empty() => args.scratch_serial = v.into(),
            ("layers", Some(v)) => {
                args.layers = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LAYERS).contains(n))
                    .ok_or_else(bad)?
            }
            ("hostname", Some(v)) if valid_hostname(v) => args.hostname = v.into(),
            ("workspace", Some(v)) if valid_tag(v) => args.workspace = Some(v.into()),
            ("debug", None) => args.debug = true,
            ("debug", Some(v)) => args.debug = !matches!(v, "0" | "off" | "false"),
            ("workspace_ro", None) => args.workspace_read_only = true,
            (
                "channel" | "root" | "scratch" | "hostname" | "workspace" | "workspace_ro"
                | "layers",
                _,
            ) => return Err(bad()),
            // A newer host may pass arguments this harness does not know: not fatal.
            _ => tracing::warn!("ignoring unknown kernel argument {word}"),
        }
    }
    Ok(args)
}

fn parse_channel(v: &str) -> Option<ChannelSpec> {
    if let Some(name) = v.strip_prefix("vport:") {
        return (!name.is_empty()).then(|| ChannelSpec::Vport(name.into()));
    }
    let rest = v.strip_prefix("vsock:")?;
    let (cid, port) = rest.split_once(':')?;
    Some(ChannelSpec::Vsock {
        cid: cid.parse().ok()?,
        port: port.parse().ok()?,
    })
}

/// A virtio-fs tag: 1-36 bytes of `[A-Za-z0-9._-]` (the same rule as the host's).
fn valid_tag(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 36
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn valid_hostname(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_aegis_args() {
        assert_eq!(
            parse("console=ttyS0 quiet reboot=t aegis.future=1").unwrap(),
            BootArgs::default()
        );
    }

    #[test]
    fn parses_every_argument() {
        let a = parse(
            "console=ttyS0 aegis.channel=vsock:2:1024 aegis.root=img aegis.scratch=scr \
             aegis.hostname=box-1 aegis.debug aegis.workspace=aegis-workspace",
        )
        .unwrap();
        assert_eq!(a.workspace.as_deref(), Some("aegis-workspace"));
        assert!(!a.workspace_read_only);
        assert!(
            parse("aegis.workspace=w aegis.workspace_ro")
                .unwrap()
                .workspace_read_only
        );
        assert_eq!(a.channel, ChannelSpec::Vsock { cid: 2, port: 1024 });
        assert_eq!(a.root_serial, "img");
        assert_eq!(a.scratch_serial, "scr");
        assert_eq!(a.hostname, "box-1");
        assert!(a.debug);
        assert_eq!(a.layers, 1);
        assert_eq!(parse("aegis.layers=5").unwrap().layers, 5);
        assert_eq!(
            parse("aegis.channel=vport:aegis.0").unwrap().channel,
            ChannelSpec::Vport("aegis.0".into())
        );
    }

    #[test]
    fn refuses_malformed_arguments() {
        for bad in [
            "aegis.channel=vsock:2",
            "aegis.channel=tcp:1",
            "aegis.channel=vport:",
            "aegis.hostname=a/b",
            "aegis.root=",
            "aegis.workspace=",
            "aegis.workspace=a/b",
            "aegis.workspace",
            "aegis.workspace_ro=1",
            "aegis.layers=0",
            "aegis.layers=21",
            "aegis.layers=x",
        ] {
            assert!(
                matches!(parse(bad), Err(InitError::Cmdline(w)) if w == bad),
                "{bad}"
            );
        }
    }
}
