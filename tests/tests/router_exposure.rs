//! The router has no authentication, so a shared HTTP port beyond loopback is never silent:
//! the real `aegis up` starts the real `aegisd` (fake backend, no VM) with `--router-addr
//! 0.0.0.0:0`; both `up`'s output and aegisd's log carry the warning. On loopback, neither.

use std::process::Command;

use aegis_tests::{bin, code, stderr};

fn up_and_down(router_addr: &str) -> (String, String) {
    let home = tempfile::Builder::new()
        .prefix("aegis-test-")
        .tempdir()
        .unwrap();
    let aegis = |args: &[&str]| {
        Command::new(bin("aegis"))
            .env("AEGIS_HOME", home.path())
            .env("AEGIS_DAEMON", bin("aegisd"))
            .args(args)
            .output()
            .unwrap()
    };
    let up = aegis(&["up", "--backend", "fake", "--router-addr", router_addr]);
    let log = std::fs::read_to_string(home.path().join("aegisd.log")).unwrap_or_default();
    let down = aegis(&["down"]);
    assert_eq!(code(&up), 0, "{}\n{log}", stderr(&up));
    assert_eq!(code(&down), 0, "{}", stderr(&down));
    (stderr(&up), log)
}

#[test]
fn a_router_beyond_loopback_is_warned_about_loudly() {
    let (up, log) = up_and_down("0.0.0.0:0");
    assert!(
        up.contains("WARNING") && up.contains("no authentication"),
        "aegis up said: {up}"
    );
    assert!(
        log.contains("NON-LOOPBACK ADDRESS") && log.contains("no authentication"),
        "aegisd log: {log}"
    );

    let (up, log) = up_and_down("127.0.0.1:0");
    assert!(!up.contains("WARNING"), "aegis up said: {up}");
    assert!(!log.contains("NON-LOOPBACK"), "aegisd log: {log}");
}
