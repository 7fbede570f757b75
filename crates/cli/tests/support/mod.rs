//! Runs the real `aegis` binary against a scripted stand-in for aegisd
//! ([`aegis_testkit::fake_aegisd`]). The daemon's own behaviour is tested in its crate; here
//! only the CLI's side of the conversation matters.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

pub use aegis_testkit::api_values::*;
pub use aegis_testkit::fake_aegisd::{FakeAegisd, Reply, Then};

pub fn aegis(home: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_aegis"));
    cmd.env("AEGIS_HOME", home)
        .env_remove("AEGIS_DAEMON")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

pub async fn run_aegis(home: &Path, args: &[&str]) -> Output {
    let output = tokio::time::timeout(Duration::from_secs(60), aegis(home).args(args).output())
        .await
        .expect("aegis did not finish within 60s")
        .unwrap();
    output
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn missing_home() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    (dir, home)
}
