//! An OCI image's run configuration applied to a request, as `docker run` does.

use std::collections::BTreeMap;

use aegis_oci::ImageConfig;

/// The parts of a task or instance request an image's configuration fills in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessDefaults {
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

/// Applies `config` under what the request says:
///
/// - command: the image's Entrypoint followed by the request's command, or by the image's
///   Cmd when the request gives none;
/// - environment: the image's Env, then the request's variables (the request wins);
/// - working directory and user: the request's, else the image's WorkingDir and User.
pub fn apply_config(request: ProcessDefaults, config: &ImageConfig) -> ProcessDefaults {
    let args = if request.command.is_empty() {
        config.cmd.clone()
    } else {
        request.command
    };
    let command = config.entrypoint.iter().cloned().chain(args).collect();
    let mut env: BTreeMap<String, String> = config
        .env
        .iter()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
        })
        .collect();
    env.extend(request.env);
    let non_empty = |s: &String| (!s.is_empty()).then(|| s.clone());
    ProcessDefaults {
        command,
        env,
        workdir: request.workdir.or_else(|| non_empty(&config.working_dir)),
        user: request.user.or_else(|| non_empty(&config.user)),
    }
}

/// [`apply_config`] in place on the four fields of a task or instance request.
pub fn apply_config_to(
    config: &ImageConfig,
    command: &mut Vec<String>,
    env: &mut BTreeMap<String, String>,
    workdir: &mut Option<String>,
    user: &mut Option<String>,
) {
    let effective = apply_config(
        ProcessDefaults {
            command: std::mem::take(command),
            env: std::mem::take(env),
            workdir: workdir.take(),
            user: user.take(),
        },
        config,
    );
    *command = effective.command;
    *env = effective.env;
    *workdir = effective.workdir;
    *user = effective.user;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/bin/tool".into()],
            cmd: vec!["--default".into()],
            env: vec!["PATH=/bin".into(), "MODE=image".into(), "EMPTY=".into()],
            working_dir: "/srv".into(),
            user: "app".into(),
            ..ImageConfig::default()
        }
    }

    #[test]
    fn image_defaults_fill_an_empty_request() {
        let p = apply_config(ProcessDefaults::default(), &config());
        assert_eq!(p.command, ["/bin/tool", "--default"]);
        assert_eq!(p.env["PATH"], "/bin");
        assert_eq!(p.env["EMPTY"], "");
        assert_eq!(p.workdir.as_deref(), Some("/srv"));
        assert_eq!(p.user.as_deref(), Some("app"));
    }

    #[test]
    fn the_request_wins_but_keeps_the_entrypoint() {
        let request = ProcessDefaults {
            command: vec!["--flag".into()],
            env: [("MODE".to_string(), "request".to_string())].into(),
            workdir: Some("/tmp".into()),
            user: Some("0".into()),
        };
        let p = apply_config(request, &config());
        assert_eq!(p.command, ["/bin/tool", "--flag"]);
        assert_eq!(p.env["MODE"], "request");
        assert_eq!(p.env["PATH"], "/bin");
        assert_eq!(p.workdir.as_deref(), Some("/tmp"));
        assert_eq!(p.user.as_deref(), Some("0"));
    }

    #[test]
    fn without_entrypoint_the_command_replaces_cmd() {
        let mut c = config();
        c.entrypoint.clear();
        let request = ProcessDefaults {
            command: vec!["echo".into(), "hi".into()],
            ..ProcessDefaults::default()
        };
        assert_eq!(apply_config(request, &c).command, ["echo", "hi"]);
        assert_eq!(
            apply_config(ProcessDefaults::default(), &c).command,
            ["--default"]
        );
    }
}
