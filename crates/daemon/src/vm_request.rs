//! What tasks and instances both ask of a VM: a command with its environment, working
//! directory and user (filled in from the image's configuration), memory and vCPUs (checked
//! against what this host can give).

use std::collections::BTreeMap;

use aegis_api::{ApiError, CreateInstance, CreateTask};
use aegis_oci::ImageConfig;

use crate::api::bad;

/// What this host can give one VM.
pub struct HostLimits {
    pub cpus: u32,
    pub memory_mib: u64,
}

impl HostLimits {
    pub fn probe() -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .map(|kib| kib / 1024)
            .unwrap_or(1024);
        HostLimits { cpus, memory_mib }
    }
}

/// What every VM request (task or instance) asks for.
pub struct VmRequest<'a> {
    pub command: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub workdir: Option<&'a str>,
    pub memory_mib: Option<u32>,
    pub vcpus: Option<u32>,
}

/// A task or an instance request, seen through what it asks of its VM.
pub trait AsVmRequest {
    fn vm_request(&self) -> VmRequest<'_>;
    /// Fills the command, environment, working directory and user from an OCI image's
    /// configuration, as `docker run` does.
    fn apply_image_config(&mut self, config: &ImageConfig);
}

/// Tasks and instances name the fields they share alike.
macro_rules! impl_as_vm_request {
    ($request:ty) => {
        impl AsVmRequest for $request {
            fn vm_request(&self) -> VmRequest<'_> {
                VmRequest {
                    command: &self.command,
                    env: &self.env,
                    workdir: self.workdir.as_deref(),
                    memory_mib: self.memory_mib,
                    vcpus: self.vcpus,
                }
            }

            fn apply_image_config(&mut self, config: &ImageConfig) {
                crate::images::apply_config_to(
                    config,
                    &mut self.command,
                    &mut self.env,
                    &mut self.workdir,
                    &mut self.user,
                );
            }
        }
    };
}

impl_as_vm_request!(CreateTask);
impl_as_vm_request!(CreateInstance);

/// Checks the memory and vCPUs asked for. No image configuration sets them, so the create
/// handlers check them before looking the image up: a request that can never run gets its 400,
/// not a 503 that says to build an image.
pub fn validate_resources(
    memory_mib: Option<u32>,
    vcpus: Option<u32>,
    limits: &HostLimits,
) -> Result<(), ApiError> {
    if let Some(m) = memory_mib {
        if m < aegis_api::MIN_MEMORY_MIB {
            return Err(bad(format!(
                "memory {m} MiB is too small: a microVM needs at least {} MiB",
                aegis_api::MIN_MEMORY_MIB
            )));
        }
        if u64::from(m) > limits.memory_mib {
            return Err(bad(format!(
                "memory {m} MiB exceeds this host's {} MiB; ask for less",
                limits.memory_mib
            )));
        }
    }
    if let Some(c) = vcpus {
        if c == 0 || c > limits.cpus {
            return Err(bad(format!(
                "vcpus must be between 1 and {} on this host (got {c})",
                limits.cpus
            )));
        }
    }
    Ok(())
}

/// Checks the command, environment and resources of a VM request.
pub fn validate_vm(req: &VmRequest<'_>, limits: &HostLimits) -> Result<(), ApiError> {
    if req.command.first().is_none_or(|c| c.is_empty()) {
        return Err(bad(
            "no command given: pass the program to run, e.g. `aegis run -- echo hi`",
        ));
    }
    if req.command.iter().any(|a| a.contains('\0')) {
        return Err(bad("command arguments must not contain NUL bytes"));
    }
    validate_resources(req.memory_mib, req.vcpus, limits)?;
    for k in req.env.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(bad(format!("invalid environment variable name '{k}'")));
        }
    }
    if req.env.values().any(|v| v.contains('\0')) {
        return Err(bad("environment values must not contain NUL bytes"));
    }
    if let Some(w) = req.workdir {
        if !w.starts_with('/') {
            return Err(bad(format!("workdir '{w}' must be an absolute guest path")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_checked_against_the_host() {
        let l = HostLimits {
            cpus: 2,
            memory_mib: 4096,
        };
        let mut r = CreateInstance {
            command: vec!["x".into()],
            ..Default::default()
        };
        assert!(validate_vm(&r.vm_request(), &l).is_ok());
        r.memory_mib = Some(0);
        let e = validate_vm(&r.vm_request(), &l).unwrap_err();
        assert!(e.error.message.contains("too small"), "{e}");
        r.memory_mib = Some(1 << 30);
        let e = validate_vm(&r.vm_request(), &l).unwrap_err();
        assert!(e.error.message.contains("exceeds"), "{e}");
        r.memory_mib = None;
        r.vcpus = Some(3);
        assert!(validate_vm(&r.vm_request(), &l).is_err());
        r.vcpus = Some(2);
        r.workdir = Some("relative".into());
        assert!(validate_vm(&r.vm_request(), &l).is_err());
    }

    #[test]
    fn tasks_and_instances_take_the_image_command_alike() {
        let config = ImageConfig {
            entrypoint: vec!["/bin/app".into()],
            cmd: vec!["serve".into()],
            working_dir: "/srv".into(),
            ..ImageConfig::default()
        };
        let mut task = CreateTask::default();
        task.apply_image_config(&config);
        let mut instance = CreateInstance::default();
        instance.apply_image_config(&config);
        assert_eq!(task.command, ["/bin/app", "serve"]);
        assert_eq!(instance.command, task.command);
        assert_eq!(instance.workdir.as_deref(), Some("/srv"));
    }
}
