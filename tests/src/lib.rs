//! Test support: a real `aegisd` in a private home (sharing the guest-artefact cache), the real
//! `aegis` CLI, and checks that nothing is left behind. The local OCI registry the image tests
//! push to is `aegis_testkit::registry`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Directory holding the built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> -> target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// The static guest harness built by `scripts/build.sh`.
pub fn harness() -> PathBuf {
    std::env::var_os("AEGIS_HARNESS")
        .map(PathBuf::from)
        .unwrap_or_else(|| bin("aegis-harness"))
}

/// The shared cache of guest artefacts (kernel, images): `$AEGIS_CACHE_HOME/cache`, default
/// `~/.aegis/cache`.
pub fn shared_cache() -> PathBuf {
    let home = std::env::var_os("AEGIS_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".aegis")
        });
    home.join("cache")
}

/// Fails the test with instructions when the real-VM prerequisites are missing. Real-VM tests
/// never pass silently without a VM.
pub fn require_guest_artifacts() {
    let mut missing = vec![];
    if !harness().is_file() {
        missing.push(format!("harness binary {}", harness().display()));
    }
    let cache = shared_cache();
    if !cache.join("kernel").is_dir() {
        missing.push(format!("guest kernel under {}", cache.display()));
    }
    for img in ["busybox", "debian"] {
        if !cache.join("images").join(img).join("rootfs.ext4").is_file() {
            missing.push(format!("image {img} under {}", cache.display()));
        }
    }
    assert!(
        missing.is_empty(),
        "real-VM test prerequisites missing: {}. Build them with `scripts/build.sh && target/debug/aegis setup`.",
        missing.join(", ")
    );
}

/// A running `aegisd` in a temporary home. Stopped (and checked for leftovers) on drop.
pub struct TestDaemon {
    pub home: tempfile::TempDir,
    child: Option<Child>,
    pub backend: String,
}

impl TestDaemon {
    /// Starts a daemon with `backend` ("qemu", "fake", ...).
    pub fn start(backend: &str) -> TestDaemon {
        Self::start_prepared(backend, |_| {})
    }

    /// [`TestDaemon::start`], calling `prepare` with the home before the daemon starts
    /// (e.g. to mount a small file system where the daemon keeps something).
    pub fn start_prepared(backend: &str, prepare: impl FnOnce(&Path)) -> TestDaemon {
        if backend != "fake" {
            require_guest_artifacts();
        }
        let home = tempfile::Builder::new()
            .prefix("aegis-test-")
            .tempdir()
            .expect("temp home");
        std::os::unix::fs::symlink(shared_cache(), home.path().join("cache")).expect("link cache");
        prepare(home.path());
        let mut d = TestDaemon {
            home,
            child: None,
            backend: backend.into(),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.home.path().join("aegisd.log")).expect("log file");
        let child = Command::new(bin("aegisd"))
            .arg("--home")
            .arg(self.home.path())
            .arg("--backend")
            .arg(&self.backend)
            .arg("--router-addr")
            .arg("127.0.0.1:0")
            .env("AEGIS_HARNESS", harness())
            .env("AEGIS_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start aegisd (did `cargo build` build it?)");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("aegisd exited early ({status}); log:\n{}", self.log());
            }
            if self.aegis(&["status", "--json"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("aegisd did not become ready; log:\n{}", self.log());
    }

    pub fn socket(&self) -> PathBuf {
        self.home.path().join("aegisd.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("aegisd.log")).unwrap_or_default()
    }

    /// An API client for this daemon.
    pub fn client(&self) -> aegis_client::Client {
        aegis_client::Client::new(self.socket())
    }

    /// Runs the `aegis` CLI against this daemon.
    pub fn aegis(&self, args: &[&str]) -> Output {
        self.aegis_cmd(args).output().expect("run aegis")
    }

    pub fn aegis_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("aegis"));
        c.env("AEGIS_HOME", self.home.path())
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Kills the daemon hard (simulates a crash); `restart` brings it back.
    pub fn kill_hard(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill_hard();
        self.spawn();
    }

    /// Stops the daemon cleanly (`aegis down`).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = self.aegis(&["down"]);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("aegisd did not stop within 30 s; log:\n{}", self.log());
        }
    }

    /// VMM processes started from this daemon's home that are still alive.
    pub fn vmm_processes(&self) -> Vec<u32> {
        processes_mentioning(&self.home.path().join("run"))
    }

    /// Asserts that no VMM process, socket or scratch disk of this daemon remains.
    pub fn assert_no_leftovers(&self) {
        // Cleanup is finished before a task is reported ended; allow a moment for the kernel
        // to reap a process that was just killed.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let procs = self.vmm_processes();
            let files = list_tree(&self.home.path().join("run"));
            if procs.is_empty() && files.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "leftovers: VMM processes {procs:?}, files {files:?}\nlog:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- aegisd log (last 60 lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        if self.child.is_some() {
            self.stop();
        }
        // Never leave a VM running, even when the test failed.
        for pid in self.vmm_processes() {
            // SAFETY: signalling a process has no memory-safety implications.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// Pids of live processes whose command line contains `needle`.
pub fn processes_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().into_owned();
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(&needle) {
                out.push(pid);
            }
        }
    }
    out
}

fn list_tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(e.path());
    }
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code, panicking with the output if the process died of a signal.
pub fn code(o: &Output) -> i32 {
    o.status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {o:?}"))
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(data))
}

/// Polls `GET /v1/tasks/{id}` until the task has ended; panics after `within`.
pub fn wait_task_end(d: &TestDaemon, id: &str, within: Duration) -> aegis_api::Task {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = d.client();
    let deadline = Instant::now() + within;
    loop {
        let task = rt.block_on(client.get_task(id)).expect("get task");
        if task.state.is_terminal() {
            return task;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} still {} after {within:?}; log:\n{}",
            task.state.as_str(),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pids of live virtiofsd processes whose command line mentions `dir` (a shared directory or
/// a run directory).
pub fn virtiofsd_processes(dir: &Path) -> Vec<u32> {
    processes_mentioning(dir)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("virtiofsd"))
                .unwrap_or(false)
        })
        .collect()
}
/// A tmpfs of `size` mounted at `dir` for the test's life (disk-full tests; needs root).
/// Stop the daemon before dropping it: a mount point left in a home keeps it from being
/// removed.
pub struct SmallDisk(PathBuf);

impl SmallDisk {
    pub fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let o = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "mount tmpfs: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        SmallDisk(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
