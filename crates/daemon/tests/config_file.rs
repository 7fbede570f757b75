//! The daemon's configuration file (docs/CONFIG.md): the documented examples parse, the
//! example file says exactly the defaults, and a file with an unknown key stops `aegisd` at
//! start-up with an error naming the key and the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aegisd::config_file::{default_limits, load, parse};

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

#[test]
fn the_example_file_in_the_docs_is_exactly_the_defaults() {
    let limits = load(&docs().join("config.example.toml"), true).unwrap();
    assert_eq!(limits, default_limits());
}

#[test]
fn every_toml_example_in_config_md_parses() {
    let path = docs().join("CONFIG.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let blocks: Vec<&str> = text
        .split("```toml\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .collect();
    assert!(!blocks.is_empty(), "CONFIG.md has TOML examples");
    for block in blocks {
        if let Err(e) = parse(&path, block) {
            panic!("an example of CONFIG.md does not parse: {e}\n{block}");
        }
    }
    let l = parse(
        &path,
        text.split("```toml\n")
            .nth(1)
            .unwrap()
            .split("```")
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(l.max_live_vms, 8);
    assert_eq!(l.task_output_bytes, 64 << 20);
    assert_eq!(l.free_disk_reserve_bytes, 5 << 30);
    assert_eq!(l.max_instances, default_limits().max_instances);
}

/// Runs `aegisd` with `args`; it must exit on its own: (exit status, stderr).
async fn aegisd(args: &[&str]) -> (std::process::ExitStatus, String) {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_aegisd"))
        .args(args)
        .env("AEGIS_LOG", "error")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("aegisd started instead of refusing its configuration")
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn an_unknown_key_stops_aegisd_at_start_up() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("config.toml");
    std::fs::write(&file, "[limits]\nmax_live_vms = 4\nmax_vms = 3\n").unwrap();
    let home_arg = home.path().to_str().unwrap();
    let (status, err) = aegisd(&["--home", home_arg]).await;
    assert!(!status.success(), "{err}");
    assert!(err.contains("unknown field `max_vms`"), "{err}");
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(!home.path().join("aegisd.sock").exists(), "it never served");

    // The same through --config, and a named file that does not exist.
    let other = home.path().join("other.toml");
    std::fs::write(&other, "[router]\nport = 1\n").unwrap();
    let (status, err) = aegisd(&["--home", home_arg, "--config", other.to_str().unwrap()]).await;
    assert!(!status.success(), "{err}");
    assert!(err.contains("unknown field `router`"), "{err}");
    assert!(err.contains("other.toml"), "{err}");
    let missing = home.path().join("missing.toml");
    let (status, err) = aegisd(&["--home", home_arg, "--config", missing.to_str().unwrap()]).await;
    assert!(!status.success(), "{err}");
    assert!(err.contains("cannot read the configuration file"), "{err}");
}
