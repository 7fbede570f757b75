//! A fake backend for fast tests of daemon logic: no VM, no QEMU, but the real guest agent.
//!
//! A fake VM is an in-process [`Agent`] (the harness's own code, `pid1: false`) serving each
//! channel over a `tokio::io::duplex`. It runs real host processes, so task streaming, exit
//! codes, timeouts and cancellation are tested end to end in milliseconds.
//!
//! ```text
//! daemon <-> duplex <-> relay (holds bytes while paused) <-> duplex <-> Agent::serve
//! ```
//!
//! Faithful where the daemon depends on it: `pause` holds bytes without losing them (the
//! processes themselves keep running; a real pause freezes them), `connect` after a
//! disconnect serves a new session on the same agent with the same processes, `wait`
//! resolves on power-off or kill, `snapshot`/`restore` are unsupported (and the capabilities
//! say so). Faults can be injected: [`FakeBackend::fail_next_boot`],
//! [`FakeBackend::crash_next_boot`], [`FakeBackend::crash`], and a guest can turn hostile
//! ([`FakeBackend::flood_streams`]): the relay, not the agent, plays the hostile guest, so the
//! real harness code is never weakened.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use aegis_harness::{Agent, AgentConfig, SessionEnd};
use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backend::{Backend, Channel, Vm, VmExit, VmmError};
use crate::capabilities::{BackendKind, Capabilities};
use crate::spec::{Share, SnapshotRef, VmSpec};

/// Kernel release the fake guest reports in its Hello.
pub const FAKE_KERNEL_RELEASE: &str = "aegis-fake";
/// Buffer of each in-memory pipe (like a socket buffer: writers block when it is full).
const PIPE_BYTES: usize = 256 * 1024;
const CONSOLE_MAX: usize = 2048;
/// How long a reconnect waits for the previous session to end.
const SESSION_END_WAIT: Duration = Duration::from_secs(5);
/// What a guest turned hostile by [`FakeBackend::flood_streams`] attempts: this many new
/// streams with this many bytes each, never waiting for credit.
pub const FLOOD_STREAMS: u32 = 100_000;
pub const FLOOD_BYTES_PER_STREAM: usize = 4096;
/// Stream ids of the flood: even (guest-opened) and far above any the harness uses.
const FLOOD_FIRST_STREAM: u32 = 1 << 30;

/// Boots fake VMs. Clones share fault injection and the list of VMs.
#[derive(Clone, Default)]
pub struct FakeBackend {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    fail_next_boot: AtomicBool,
    crash_next_boot: AtomicBool,
    boots: AtomicU64,
    vms: Mutex<HashMap<String, Weak<FakeVmState>>>,
    /// The shares of every VM booted, by VM id (recorded, not mounted).
    shares: Mutex<HashMap<String, Vec<Share>>>,
}

impl FakeBackend {
    pub fn new() -> FakeBackend {
        FakeBackend::default()
    }

    /// The next `boot` fails as if the VMM could not be started (`VmmError::Spawn`).
    pub fn fail_next_boot(&self) {
        self.shared.fail_next_boot.store(true, Ordering::Release);
    }

    /// The next booted VM crashes at once: its guest never says Hello, `connect` fails with
    /// `VmmError::Exited`, and `wait` returns `VmExit::Failed`.
    pub fn crash_next_boot(&self) {
        self.shared.crash_next_boot.store(true, Ordering::Release);
    }

    /// Crashes the running VM `id` now, as if the VMM died (SIGSEGV): its channel drops, its
    /// processes are killed, `wait` returns `VmExit::Failed`. False if there is no such VM
    /// (or it has already exited).
    pub fn crash(&self, id: &str) -> bool {
        let vm = self.shared.vms.lock().get(id).and_then(Weak::upgrade);
        match vm {
            Some(vm) => vm.end(
                VmExit::Failed {
                    code: None,
                    signal: Some(libc::SIGSEGV),
                },
                "fake VMM: crashed (injected)",
            ),
            None => false,
        }
    }

    /// The running VM `id` stops hearing the host, as a guest that ignores requests: what the
    /// host sends is held, what the guest sends still arrives. False if there is no such VM.
    pub fn deafen(&self, id: &str) -> bool {
        let vm = self.shared.vms.lock().get(id).and_then(Weak::upgrade);
        vm.map(|vm| vm.deaf.send_replace(true)).is_some()
    }

    /// The guest of the running VM `id` turns hostile: after the frame in flight, the agent's
    /// frames stop reaching the host and the guest instead opens [`FLOOD_STREAMS`] streams of
    /// [`FLOOD_BYTES_PER_STREAM`] bytes each, ignoring flow control, until the host hangs up.
    /// False if there is no such VM.
    pub fn flood_streams(&self, id: &str) -> bool {
        let vm = self.shared.vms.lock().get(id).and_then(Weak::upgrade);
        vm.map(|vm| vm.hostile.send_replace(true)).is_some()
    }

    /// The shares VM `id` was booted with (empty for an unknown VM).
    pub fn shares(&self, id: &str) -> Vec<Share> {
        self.shared
            .shares
            .lock()
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// How many times `boot` was called.
    pub fn boots(&self) -> u64 {
        self.shared.boots.load(Ordering::Acquire)
    }

    /// Ids of the VMs that have not exited.
    pub fn running(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .shared
            .vms
            .lock()
            .iter()
            .filter_map(|(id, vm)| {
                let vm = vm.upgrade()?;
                let running = vm.exit.borrow().is_none();
                running.then(|| id.clone())
            })
            .collect();
        ids.sort();
        ids
    }
}

#[async_trait]
impl Backend for FakeBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Fake
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            pause: true,
            memory_snapshot: false,
            vsock: false,
            virtio_fs: false,
            // Recorded, not mounted: the fake guest runs on the host and sees host paths.
            shared_directories: true,
            tap_network: false,
            accelerator: "none".into(),
        }
    }

    async fn boot(&self, spec: &VmSpec) -> Result<Box<dyn Vm>, VmmError> {
        self.shared.boots.fetch_add(1, Ordering::AcqRel);
        if spec.memory_mib < VmSpec::MIN_MEMORY_MIB || spec.vcpus == 0 {
            return Err(VmmError::InvalidSpec(format!(
                "{} vCPUs and {} MiB: need at least 1 vCPU and {} MiB",
                spec.vcpus,
                spec.memory_mib,
                VmSpec::MIN_MEMORY_MIB
            )));
        }
        if self.shared.fail_next_boot.swap(false, Ordering::AcqRel) {
            return Err(VmmError::Spawn {
                program: PathBuf::from("fake-vmm"),
                source: std::io::Error::other("injected boot failure"),
            });
        }
        // The agent's file system root: guest paths (cwd, ReadPath) resolve under it.
        let root = spec.run_dir.join("root");
        std::fs::create_dir_all(&root).map_err(|source| VmmError::Io {
            op: "create fake guest root",
            path: root.clone(),
            source,
        })?;
        let agent = Agent::new(AgentConfig {
            pid1: false,
            base_env: vec![
                (
                    "PATH".into(),
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ),
                ("HOME".into(), root.to_string_lossy().into_owned()),
                ("LANG".into(), "C.UTF-8".into()),
            ],
            kernel_release: FAKE_KERNEL_RELEASE.into(),
            root,
        });
        let (exit, _) = watch::channel(None);
        let (paused, _) = watch::channel(false);
        let (deaf, _) = watch::channel(false);
        let (hostile, _) = watch::channel(false);
        let state = Arc::new(FakeVmState {
            id: spec.id.clone(),
            run_dir: spec.run_dir.clone(),
            agent: Arc::new(agent),
            exit,
            paused,
            deaf,
            hostile,
            console: Mutex::new(String::new()),
            connection: Mutex::new(None),
        });
        state.log("fake VM booted");
        self.shared
            .shares
            .lock()
            .insert(spec.id.clone(), spec.shares.clone());
        self.shared
            .vms
            .lock()
            .insert(spec.id.clone(), Arc::downgrade(&state));
        if self.shared.crash_next_boot.swap(false, Ordering::AcqRel) {
            state.end(
                VmExit::Failed {
                    code: Some(1),
                    signal: None,
                },
                "fake VMM: crashed during boot (injected)",
            );
        }
        Ok(Box::new(FakeVm { state }))
    }

    async fn restore(
        &self,
        _spec: &VmSpec,
        _snapshot: &SnapshotRef,
    ) -> Result<Box<dyn Vm>, VmmError> {
        Err(VmmError::Unsupported {
            backend: BackendKind::Fake,
            operation: "restore a memory snapshot",
        })
    }
}

struct Connection {
    relays: [JoinHandle<()>; 2],
    serve: JoinHandle<()>,
}

struct FakeVmState {
    id: String,
    run_dir: PathBuf,
    agent: Arc<Agent>,
    exit: watch::Sender<Option<VmExit>>,
    paused: watch::Sender<bool>,
    /// Host-to-guest bytes are held (see [`FakeBackend::deafen`]).
    deaf: watch::Sender<bool>,
    /// The guest floods the host (see [`FakeBackend::flood_streams`]).
    hostile: watch::Sender<bool>,
    console: Mutex<String>,
    /// Tasks of the current channel.
    connection: Mutex<Option<Connection>>,
}

impl FakeVmState {
    fn log(&self, line: &str) {
        let mut c = self.console.lock();
        c.push_str(line);
        c.push('\n');
        if c.len() > CONSOLE_MAX {
            let cut = c.len() - CONSOLE_MAX;
            let cut = (cut..c.len()).find(|i| c.is_char_boundary(*i)).unwrap_or(0);
            c.drain(..cut);
        }
    }

    /// Cuts the channel and stops the agent's session at once (crash, kill).
    fn drop_connection(&self) {
        if let Some(c) = self.connection.lock().take() {
            for t in c.relays.iter().chain([&c.serve]) {
                t.abort();
            }
        }
    }

    /// Cuts the channel and lets the agent's session end on its own (it sees EOF), as in a
    /// guest whose host went away; waits for it so two sessions never overlap.
    async fn disconnect(&self) {
        let old = self.connection.lock().take();
        if let Some(c) = old {
            for t in &c.relays {
                t.abort();
            }
            let abort = c.serve.abort_handle();
            if tokio::time::timeout(SESSION_END_WAIT, c.serve)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// Ends the VM with `exit` unless it has already ended. True if this call ended it.
    fn end(&self, exit: VmExit, why: &str) -> bool {
        let mut ended = false;
        self.exit.send_if_modified(|e| {
            if e.is_none() {
                *e = Some(exit.clone());
                ended = true;
            }
            ended
        });
        if ended {
            self.log(why);
            self.drop_connection();
            self.agent.kill_all();
        }
        ended
    }

    fn exited_error(&self, exit: VmExit) -> VmmError {
        VmmError::Exited {
            id: self.id.clone(),
            exit,
            console_tail: self.console.lock().clone(),
        }
    }
}

/// One fake VM.
pub struct FakeVm {
    state: Arc<FakeVmState>,
}

#[async_trait]
impl Vm for FakeVm {
    fn id(&self) -> &str {
        &self.state.id
    }

    fn pid(&self) -> Option<u32> {
        None
    }

    fn run_dir(&self) -> &Path {
        &self.state.run_dir
    }

    async fn connect(&self) -> Result<Channel, VmmError> {
        let st = &self.state;
        if let Some(exit) = st.exit.borrow().clone() {
            return Err(st.exited_error(exit));
        }
        // Like a reconnect to QEMU's socket: the previous connection is gone.
        st.disconnect().await;
        let (host, relay_host) = tokio::io::duplex(PIPE_BYTES);
        let (relay_guest, guest) = tokio::io::duplex(PIPE_BYTES);
        let (hr, hw) = tokio::io::split(relay_host);
        let (gr, gw) = tokio::io::split(relay_guest);
        let agent = st.agent.clone();
        let weak = Arc::downgrade(st);
        let serve = tokio::spawn(async move {
            let end = agent.serve(guest).await;
            if let Some(st) = weak.upgrade() {
                match end {
                    SessionEnd::Shutdown => {
                        st.end(VmExit::PoweredOff, "fake guest: powered off");
                    }
                    SessionEnd::Disconnected => st.log("fake guest: host disconnected"),
                }
            }
        });
        let relays = [
            tokio::spawn(relay(hr, gw, [st.paused.subscribe(), st.deaf.subscribe()])),
            tokio::spawn(guest_relay(
                gr,
                hw,
                st.paused.subscribe(),
                st.hostile.subscribe(),
            )),
        ];
        *st.connection.lock() = Some(Connection { relays, serve });
        // A crash may have raced with this connect.
        if let Some(exit) = st.exit.borrow().clone() {
            st.drop_connection();
            return Err(st.exited_error(exit));
        }
        Ok(Box::new(host))
    }

    async fn pause(&self) -> Result<(), VmmError> {
        if let Some(exit) = self.state.exit.borrow().clone() {
            return Err(self.state.exited_error(exit));
        }
        self.state.paused.send_replace(true);
        Ok(())
    }

    async fn resume(&self) -> Result<(), VmmError> {
        if let Some(exit) = self.state.exit.borrow().clone() {
            return Err(self.state.exited_error(exit));
        }
        self.state.paused.send_replace(false);
        Ok(())
    }

    async fn snapshot(&self, _dir: &Path) -> Result<SnapshotRef, VmmError> {
        Err(VmmError::Unsupported {
            backend: BackendKind::Fake,
            operation: "take a memory snapshot",
        })
    }

    async fn wait(&self) -> VmExit {
        let mut rx = self.state.exit.subscribe();
        loop {
            if let Some(exit) = rx.borrow_and_update().clone() {
                return exit;
            }
            if rx.changed().await.is_err() {
                // The state owns the sender and we hold the state: cannot happen.
                return VmExit::Killed;
            }
        }
    }

    async fn kill(&self) -> Result<(), VmmError> {
        self.state.end(VmExit::Killed, "fake VMM: killed");
        Ok(())
    }

    fn console_tail(&self) -> String {
        self.state.console.lock().clone()
    }
}

impl Drop for FakeVm {
    fn drop(&mut self) {
        self.state.end(VmExit::Killed, "fake VMM: handle dropped");
    }
}

/// Copies `from` to `to`, holding bytes (never dropping them) while any of `holds` is true.
async fn relay<R, W, const N: usize>(mut from: R, mut to: W, mut holds: [watch::Receiver<bool>; N])
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if wait_released(&mut holds).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        // Paused while reading: hold these bytes until resumed.
        if wait_released(&mut holds).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The guest-to-host relay: copies whole frames (so that a flood starts on a frame
/// boundary), holding them while paused, until the guest turns hostile; then floods.
async fn guest_relay<R, W>(
    mut from: R,
    mut to: W,
    paused: watch::Receiver<bool>,
    mut hostile: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut holds = [paused];
    loop {
        let frame = tokio::select! {
            biased;
            _ = hostile.wait_for(|h| *h) => break,
            f = read_frame(&mut from) => f,
        };
        let Ok(frame) = frame else {
            let _ = to.shutdown().await;
            return;
        };
        if wait_released(&mut holds).await.is_err() || to.write_all(&frame).await.is_err() {
            return;
        }
    }
    flood(&mut to).await;
}

/// One frame as it is on the wire: the length prefix and what it counts.
async fn read_frame<R: AsyncRead + Unpin>(from: &mut R) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    from.read_exact(&mut len).await?;
    let n = u32::from_le_bytes(len) as usize;
    let mut frame = vec![0u8; 4 + n];
    frame[..4].copy_from_slice(&len);
    from.read_exact(&mut frame[4..]).await?;
    Ok(frame)
}

/// Opens [`FLOOD_STREAMS`] streams with a data frame each, never waiting for credit, until
/// the host stops reading.
async fn flood<W: AsyncWrite + Unpin>(to: &mut W) {
    // Wire format of `aegis_proto::frame`: len (kind + stream + payload), kind 1 (data),
    // stream, payload. Hand-made so that nothing in the protocol crate can refuse it.
    let len = (1 + 4 + FLOOD_BYTES_PER_STREAM) as u32;
    let mut frame = Vec::with_capacity(4 + len as usize);
    for i in 0..FLOOD_STREAMS {
        frame.clear();
        frame.extend_from_slice(&len.to_le_bytes());
        frame.push(1);
        frame.extend_from_slice(&(FLOOD_FIRST_STREAM + 2 * i).to_le_bytes());
        frame.resize(4 + len as usize, 0xa5);
        if to.write_all(&frame).await.is_err() {
            return;
        }
    }
}

async fn wait_released(holds: &mut [watch::Receiver<bool>]) -> Result<(), ()> {
    // Re-checked after every change: one hold may be set while waiting for another.
    while let Some(hold) = holds.iter_mut().find(|h| *h.borrow()) {
        hold.changed().await.map_err(|_| ())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
