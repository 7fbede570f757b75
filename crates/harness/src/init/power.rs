//! Powering the guest off, on request or on any fatal error.
//!
//! `sync(); reboot(RB_AUTOBOOT)`: with `-no-reboot` QEMU exits on the guest's reset, and the
//! VMM backend picks the kernel's `reboot=` method its VMM turns into an exit (`reboot=t` for
//! QEMU, `reboot=k` for Firecracker; see docs/GUEST.md). A failed `RB_POWER_OFF` would halt
//! the kernel with no way back, so it is not used.

use std::time::{Duration, Instant};

use super::mounts::Layers;
use super::{console, sys, workspace};

/// How long stray processes get to disappear after SIGKILL.
const REAP_WAIT: Duration = Duration::from_secs(1);

/// Installs a panic hook that powers off: PID 1 must never hang or exit (the kernel would
/// panic with "Attempted to kill init").
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        console::say("FATAL: the harness panicked; powering off");
        off(None);
    }));
}

/// Kills every process, syncs, shuts the disks down cleanly where possible and resets the
/// machine. Never returns.
pub fn off(layers: Option<Layers>) -> ! {
    sys::kill_all_processes(libc::SIGKILL);
    let started = Instant::now();
    while !sys::reap_all() && started.elapsed() < REAP_WAIT {
        std::thread::sleep(Duration::from_millis(10));
    }
    sys::sync();
    workspace::shut_down();
    if let Some(layers) = layers {
        layers.shut_down();
        sys::sync();
    }
    console::say("powering off");
    let e = sys::reboot(libc::RB_AUTOBOOT);
    console::say(&format!("reboot failed: {e}; halting"));
    loop {
        // SAFETY: pause(2) just waits for a signal.
        unsafe { libc::pause() };
    }
}
