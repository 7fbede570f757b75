//! The byte stream to the host: a virtio-serial port (QEMU) or a vsock connection
//! (Firecracker, libkrun), driven by tokio through `AsyncFd` (non-blocking fd + epoll).
//!
//! **virtio-serial.** The port is opened once, read-write, and kept for the life of the
//! guest. Its semantics (Linux `virtio_console`): while no host is connected to QEMU's
//! chardev, `read` returns 0 (EOF) and `poll` reports `POLLHUP` without `POLLOUT`; when a
//! host connects, the port wakes its waiters and `POLLOUT` appears. So after a session ends
//! the harness waits for `POLLHUP` to clear before serving the next session on the same fd.
//!
//! **vsock.** The guest dials the host (`connect` is retried until the host listens) and
//! dials again after every disconnect (Firecracker resets vsock connections on snapshot).

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::cmdline::ChannelSpec;
use super::error::{Context as _, InitError};

/// How long to wait for the named port to appear (the host names ports asynchronously).
const PORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often to re-check a disconnected port when no wake-up arrives.
const HOST_POLL: Duration = Duration::from_millis(100);

pub enum Channel {
    Port {
        path: PathBuf,
        fd: Option<Arc<AsyncFd<OwnedFd>>>,
        raw: Option<OwnedFd>,
    },
    Vsock {
        cid: u32,
        port: u32,
    },
}

impl Channel {
    /// Finds (and for a port, opens) the channel named on the command line.
    pub fn open(spec: &ChannelSpec) -> Result<Channel, InitError> {
        match spec {
            ChannelSpec::Vport(name) => {
                let path = find_port(name)?;
                let fd = fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                    .open(&path)
                    .ctx("open", &path)?;
                tracing::debug!(path = %path.display(), "opened virtio-serial port");
                Ok(Channel::Port {
                    path,
                    fd: None,
                    raw: Some(fd.into()),
                })
            }
            ChannelSpec::Vsock { cid, port } => Ok(Channel::Vsock {
                cid: *cid,
                port: *port,
            }),
        }
    }

    /// Waits until a host is there and returns the stream to serve it on.
    pub async fn connect(&mut self) -> io::Result<FdStream> {
        match self {
            Channel::Port { path, fd, raw } => {
                let fd = match fd {
                    Some(fd) => fd.clone(),
                    None => {
                        let raw = raw.take().ok_or_else(|| io::Error::other("port lost"))?;
                        let registered = Arc::new(register(raw).map_err(|e| {
                            io::Error::new(
                                e.kind(),
                                format!("cannot poll {} with epoll: {e}", path.display()),
                            )
                        })?);
                        *fd = Some(registered.clone());
                        registered
                    }
                };
                wait_for_host(&fd).await?;
                Ok(FdStream { fd })
            }
            Channel::Vsock { cid, port } => {
                let (cid, port) = (*cid, *port);
                let sock = tokio::task::spawn_blocking(move || dial_vsock(cid, port))
                    .await
                    .map_err(io::Error::other)?;
                Ok(FdStream {
                    fd: Arc::new(register(sock)?),
                })
            }
        }
    }
}

/// Registers `fd` with the runtime's epoll.
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is open and always returns the same descriptor from as_raw_fd, and
    // the AsyncFd owns it for its whole lifetime.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

/// `/dev/vportNpM` of the port whose name is `name`; creates `/dev/virtio-ports/NAME` too.
fn find_port(name: &str) -> Result<PathBuf, InitError> {
    let started = Instant::now();
    loop {
        let found = fs::read_dir("/sys/class/virtio-ports")
            .into_iter()
            .flatten()
            .flatten()
            .find(|e| fs::read_to_string(e.path().join("name")).is_ok_and(|n| n.trim() == name))
            .map(|e| e.file_name());
        if let Some(dev) = found {
            let path = PathBuf::from("/dev").join(&dev);
            // udev's by-name link, for the user's benefit.
            let _ = fs::create_dir_all("/dev/virtio-ports");
            let _ = std::os::unix::fs::symlink(
                PathBuf::from("..").join(&dev),
                PathBuf::from("/dev/virtio-ports").join(name),
            );
            if path.exists() {
                return Ok(path);
            }
        }
        if started.elapsed() > PORT_TIMEOUT {
            return Err(InitError::NoPort(name.into()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Resolves once a host is connected to the port (no `POLLHUP`).
async fn wait_for_host(fd: &AsyncFd<OwnedFd>) -> io::Result<()> {
    let mut logged = false;
    loop {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: poll reads and writes the one pollfd we pass; timeout 0 never blocks.
        if unsafe { libc::poll(&mut p, 1, 0) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            continue;
        }
        if p.revents & libc::POLLHUP == 0 {
            return Ok(());
        }
        if !logged {
            tracing::debug!("waiting for the host to connect");
            logged = true;
        }
        // The port wakes its waiters when the host connects; the timer covers any kernel
        // that does not.
        tokio::select! {
            guard = fd.writable() => guard?.clear_ready(),
            _ = tokio::time::sleep(HOST_POLL) => {}
        }
    }
}

/// Connects to `cid:port`, retrying until the host listens.
fn dial_vsock(cid: u32, port: u32) -> OwnedFd {
    let mut delay = Duration::from_millis(10);
    let mut attempts = 0u32;
    loop {
        match try_vsock(cid, port) {
            Ok(fd) => return fd,
            Err(e) => {
                attempts += 1;
                if attempts == 1 || attempts.is_multiple_of(20) {
                    tracing::info!("vsock {cid}:{port} not reachable yet ({e}); retrying");
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

fn try_vsock(cid: u32, port: u32) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes plain integers.
    let raw = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket succeeded; the descriptor is ours alone.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_vm is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    // SAFETY: the pointer and length describe `addr`, a sockaddr_vm that outlives the call.
    let r = unsafe {
        libc::connect(
            sock.as_raw_fd(),
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    set_nonblocking(&sock)?;
    Ok(sock)
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with integer arguments.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One session's view of the channel: read(2)/write(2) on a non-blocking fd under epoll.
pub struct FdStream {
    fd: Arc<AsyncFd<OwnedFd>>,
}

fn syscall_result(n: isize) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let result = guard.try_io(|fd| {
                // SAFETY: read(2) writes at most `unfilled.len()` bytes into `unfilled`.
                let n = unsafe {
                    libc::read(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len())
                };
                syscall_result(n)
            });
            match result {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            let result = guard.try_io(|fd| {
                // SAFETY: write(2) reads at most `data.len()` bytes from `data`.
                let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                syscall_result(n)
            });
            match result {
                Ok(Ok(n)) => return Poll::Ready(Ok(n)),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
