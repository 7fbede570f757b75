//! Start-up reconciliation: the registry is compared with live processes, and whatever a
//! crashed daemon left behind is cleaned up. VMs are not reattached: a task's output stream
//! died with the old daemon, so its VM is killed and the task marked failed; so are the execs
//! that were running in instances' VMs.

use std::path::Path;

use aegis_registry::Registry;

use crate::config::Config;

pub async fn reconcile(config: &Config, registry: &Registry) -> anyhow::Result<()> {
    for vm in registry.list_vms()? {
        if let Some(pid) = vm.pid {
            if is_our_vmm(pid, &vm.id) {
                tracing::warn!(vm = %vm.id, pid, "killing VMM left behind by a previous aegisd");
                // SAFETY: sending a signal has no memory-safety implications; the pid was
                // checked to be our VMM (its command line names the VM id).
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        let run_dir = Path::new(&vm.run_dir);
        // Its virtiofsd helpers (shared directories), checked against pid reuse by their
        // command line naming this run directory.
        for pid in aegis_vmm::qemu::virtiofsd::leftover_pids(run_dir) {
            tracing::warn!(vm = %vm.id, pid, "killing virtiofsd left behind by a previous aegisd");
            let pid = pid as i32;
            // SAFETY: sending a signal has no memory-safety implications; the pid was checked
            // to be a virtiofsd serving this VM's run directory. It leads its own process
            // group (its sandbox child is in it too).
            unsafe {
                if libc::kill(-pid, libc::SIGKILL) != 0 {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        remove_run_dir(config, run_dir);
        registry.delete_vm(&vm.id)?;
    }
    // Run directories without a record (crash between mkdir and insert).
    if let Ok(entries) = std::fs::read_dir(config.home.run_dir()) {
        for e in entries.flatten() {
            remove_run_dir(config, &e.path());
        }
    }
    let failed = registry.fail_unfinished_tasks(
        "aegisd restarted while the task was running",
        &crate::ids::now(),
    )?;
    if !failed.is_empty() {
        tracing::warn!(tasks = ?failed, "marked tasks of the previous aegisd as failed");
    }
    // An exec's process ran in an instance's VM, which died with the previous daemon; its
    // output files are intact and stay readable.
    let failed = registry
        .fail_running_execs(crate::instances::exec_record::RESTARTED, &crate::ids::now())?;
    if !failed.is_empty() {
        tracing::warn!(execs = ?failed, "marked execs of the previous aegisd as failed");
    }
    Ok(())
}

/// Whether `pid` is alive and its command line names VM `id` (guards against pid reuse).
fn is_our_vmm(pid: u32, id: &str) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => {
            let needle = format!("aegis-{id}");
            cmdline.split(|b| *b == 0).any(|arg| {
                std::str::from_utf8(arg).is_ok_and(|a| a.split(',').any(|p| p.ends_with(&needle)))
            })
        }
        Err(_) => false,
    }
}

fn remove_run_dir(config: &Config, dir: &Path) {
    // Only ever delete inside our own run directory.
    let run_dir = config.home.run_dir();
    if dir.starts_with(&run_dir) && dir != run_dir {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove run directory");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_process_is_not_ours() {
        assert!(!is_our_vmm(std::process::id(), "vm-000000000000"));
        assert!(!is_our_vmm(u32::MAX - 1, "vm-x"));
    }
}
