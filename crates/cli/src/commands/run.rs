//! `aegis run`: run a command in a fresh microVM and stream its output; with `--expose`,
//! serve it instead (serve mode, in [`serve`]).

mod serve;

pub use serve::stream_logs;

use std::collections::BTreeMap;

use aegis_api::{CreateInstance, CreateTask, IdlePolicy, PortSpec, Task, TaskState};
use aegis_client::{Client, FollowItem};
use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};

use crate::context::Context;
use crate::exit;
use crate::parse;
use crate::render;
use crate::sink::Sink;

const AFTER_HELP: &str = "\
The command runs in a new microVM that is thrown away when it ends. Its stdout and stderr
arrive on aegis's stdout and stderr, byte for byte, as they are written. Options go before the
command; everything from the command on (or after `--`) is passed to it untouched.

Serve mode: with --expose, the command is a server and `run` creates an instance instead of a
task. Each exposed port is listened on at once (on 127.0.0.1); nothing runs until a
connection arrives, which wakes the VM; the router proxies it, and the VM pauses when idle,
then terminates, and wakes again on the next connection. SPEC is GUEST, GUEST:PROTO,
HOST:GUEST or HOST:GUEST:PROTO; PROTO is http (default), tcp, grpc or websocket; without HOST
(or with 0) aegisd picks a free host port. `run` prints where each port is served and follows
the server's output; Ctrl-C removes the instance.

Examples:
  aegis run -- echo \"hello from aegis\"
  aegis run --image busybox -- sh -c 'uname -a; cat /proc/cpuinfo | head'
  aegis run -e API_KEY -e MODE=fast --memory 1G --cpus 2 -- python3 job.py
  aegis run --timeout 5m --artifact /out -- sh -c 'mkdir /out && date > /out/when'
  aegis run --workspace ./data -- python3 analyze.py   # sees and edits ./data at /workspace
  aegis run --workspace notes -- sh -c 'date >> /workspace/log'   # a named workspace
  aegis run --workspace ./src:ro -- make -C /workspace test      # read-only: cannot change ./src
  id=$(aegis run --detach -- sleep 60); aegis task logs --follow \"$id\"
  aegis run --expose 8000:http -- python3 -m http.server 8000
  aegis run --expose 8080:80:http --expose 5432:tcp --pause-after 30s -- python3 app.py
  id=$(aegis run -d --name api --expose 50051:grpc -- python3 server.py)

Exit status:
  the command's own exit code, or
  124  the task hit --timeout
  125  aegis failed: daemon not running, invalid option, VM failure
  126  the command is not executable;  127  the command was not found
  130  interrupted with Ctrl-C (the task is cancelled, the instance removed);  143  SIGTERM
  137  the task was cancelled by someone else (`aegis task cancel`)
  0    serve mode: the instance was removed by someone else (`aegis instance rm`)";

const SERVE: &str = "Serve mode (with --expose)";

/// Run a command in a fresh microVM and stream its output.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Guest image: a built-in one (`busybox`, `debian`; see `aegis setup`) or an OCI image
    /// reference (`alpine:3.21`, `ghcr.io/org/app:v1`), pulled first if it is not yet.
    /// The daemon's default is "debian".
    #[arg(long, value_name = "NAME|REF")]
    pub image: Option<String>,

    /// Run the command as USER[:GROUP] (names from the image's /etc/passwd, or numbers)
    /// [default: the image's User, else root].
    #[arg(short = 'u', long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,

    /// Set an environment variable in the guest; `KEY` alone passes this shell's value.
    /// Repeatable.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse::env_pair)]
    pub env: Vec<(String, String)>,

    /// Number of vCPUs.
    #[arg(long, value_name = "N", value_parser = parse::vcpus, allow_hyphen_values = true)]
    pub cpus: Option<u32>,

    /// Guest memory: MiB, or a size such as 512M or 1G.
    #[arg(short = 'm', long, value_name = "SIZE", value_parser = parse::memory_mib, allow_hyphen_values = true)]
    pub memory: Option<u32>,

    /// Kill the task after this long (30s, 5m, 1h30m, or seconds); exit code 124.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration_secs, allow_hyphen_values = true, conflicts_with = "expose")]
    pub timeout: Option<u64>,

    /// Guest path (file or directory) to copy back to the host when the task ends.
    /// Repeatable.
    #[arg(long = "artifact", value_name = "GUEST_PATH", value_parser = parse::guest_path, conflicts_with = "expose")]
    pub artifacts: Vec<String>,

    /// Working directory of the command in the guest.
    #[arg(short = 'w', long, value_name = "DIR", value_parser = parse::guest_path)]
    pub workdir: Option<String>,

    /// Mount a workspace at /workspace: a workspace NAME (created isolated if it does not
    /// exist; see `aegis workspace`) or a host directory PATH (`./dir`, `/abs/dir`), which the
    /// command sees and edits in place. Its data outlives the VM. `:ro` after it
    /// (`./src:ro`) mounts it read-only, enforced by the host.
    #[arg(long, value_name = "NAME|PATH[:ro]", value_parser = crate::commands::workspace::workspace_arg)]
    pub workspace: Option<String>,

    /// Print the task (or instance) id and return at once; follow it with
    /// `aegis task logs --follow` (`aegis instance logs --follow`).
    #[arg(short = 'd', long)]
    pub detach: bool,

    /// Forward stdin to the command even when it is a terminal. It is forwarded whenever it is
    /// not one (`printf x | aegis run -- cat`); its end is the command's EOF.
    #[arg(short = 'i', long, conflicts_with_all = ["detach", "expose"])]
    pub interactive: bool,

    /// Serve a guest port: GUEST, GUEST:PROTO, HOST:GUEST or HOST:GUEST:PROTO, e.g. 8000,
    /// 5432:tcp, 8080:80:http; PROTO is http (default), tcp, grpc or websocket. Repeatable.
    #[arg(long = "expose", value_name = "SPEC", value_parser = parse::port_spec, help_heading = SERVE)]
    pub expose: Vec<PortSpec>,

    /// Name of the instance (lowercase letters, digits, '-'), usable instead of its id; HTTP
    /// ports are also reachable with `Host: NAME` on the router's shared port [default: the
    /// id].
    #[arg(long, value_name = "NAME", value_parser = parse::instance_name, help_heading = SERVE)]
    pub name: Option<String>,

    /// What keeps the VM awake: `on` (any open connection) or `idle` (only traffic: quiet
    /// connections do not, and their next byte wakes the VM) [default: on].
    #[arg(long, value_name = "POLICY", value_parser = parse::idle_policy, help_heading = SERVE)]
    pub idle_policy: Option<IdlePolicy>,

    /// Pause the VM (RAM kept) after this long without activity [default: 1m].
    #[arg(long, value_name = "DURATION", value_parser = parse::timer_secs, allow_hyphen_values = true, help_heading = SERVE)]
    pub pause_after: Option<u64>,

    /// Terminate the paused VM (RAM released) after this long [default: 20m].
    #[arg(long, value_name = "DURATION", value_parser = parse::timer_secs, allow_hyphen_values = true, help_heading = SERVE)]
    pub terminate_after: Option<u64>,

    /// How long a connection is held while the VM wakes before it is refused (HTTP: 503)
    /// [default: 1m].
    #[arg(long, value_name = "DURATION", value_parser = parse::timer_secs, allow_hyphen_values = true, help_heading = SERVE)]
    pub wake_timeout: Option<u64>,

    /// Hold browsers like other HTTP clients during a wake instead of showing them a
    /// loading page.
    #[arg(long, help_heading = SERVE)]
    pub no_loading_page: bool,

    /// The command and its arguments. With an OCI image, they replace the image's Cmd (its
    /// Entrypoint stays), and the image's Cmd runs when they are left out.
    #[arg(
        trailing_var_arg = true,
        value_name = "COMMAND",
        required_unless_present = "image"
    )]
    pub command: Vec<String>,
}

impl Args {
    fn request(&self) -> CreateTask {
        CreateTask {
            command: self.command.clone(),
            image: self.image.clone(),
            env: self.env.iter().cloned().collect::<BTreeMap<_, _>>(),
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            vcpus: self.cpus,
            memory_mib: self.memory,
            timeout_secs: self.timeout,
            artifacts: self.artifacts.clone(),
            max_artifact_bytes: None,
            workspace: self.workspace.clone(),
            stdin: false,
        }
    }

    /// Whether this runs a server (serve mode) rather than a task.
    pub fn serves(&self) -> bool {
        !self.expose.is_empty()
    }

    /// Checks across options that value parsers cannot make, before the daemon is asked;
    /// the error is a message in the form of clap's.
    pub fn check(&self) -> Result<(), String> {
        if !self.serves() {
            let serve_only = [
                ("--name <NAME>", self.name.is_some()),
                ("--idle-policy <POLICY>", self.idle_policy.is_some()),
                ("--pause-after <DURATION>", self.pause_after.is_some()),
                (
                    "--terminate-after <DURATION>",
                    self.terminate_after.is_some(),
                ),
                ("--wake-timeout <DURATION>", self.wake_timeout.is_some()),
                ("--no-loading-page", self.no_loading_page),
            ];
            if let Some((arg, _)) = serve_only.iter().find(|(_, given)| *given) {
                return Err(format!(
                    "the argument '{arg}' is for serve mode only: add --expose <SPEC> to serve \
                     a port, or leave it out"
                ));
            }
        }
        parse::exposed_ports(&self.expose)
    }

    /// The ServeTarget of serve mode.
    fn instance_request(&self) -> CreateInstance {
        CreateInstance {
            name: self.name.clone(),
            command: self.command.clone(),
            image: self.image.clone(),
            env: self.env.iter().cloned().collect::<BTreeMap<_, _>>(),
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            workspace: self.workspace.clone(),
            vcpus: self.cpus,
            memory_mib: self.memory,
            expose: self.expose.clone(),
            idle_policy: self.idle_policy.unwrap_or_default(),
            pause_after_secs: self.pause_after,
            terminate_after_secs: self.terminate_after,
            wake_timeout_secs: self.wake_timeout,
            loading_page: self.no_loading_page.then_some(false),
            ..Default::default()
        }
    }
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    if let Some(image) = &args.image {
        ensure_image(ctx.client(), image).await?;
    }
    if args.serves() {
        return serve::run(ctx, &args).await;
    }
    let client = ctx.client();
    let mut request = args.request();
    if args.detach {
        let task = client.create_task(&request).await?;
        println!("{}", task.id);
        return Ok(0);
    }

    // Installed before the task exists, so an early Ctrl-C still cancels it.
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;

    request.stdin = crate::stdin::wanted(args.interactive);
    let task = client.create_task(&request).await?;
    let id = task.id.clone();
    if request.stdin {
        let (client, id) = (client.clone(), id.clone());
        tokio::spawn(async move {
            match client.upload_task_stdin(&id, crate::stdin::chunks()).await {
                // A task that ended before it read its stdin is no longer found: fine.
                Err(e) if !e.is_not_found() => {
                    eprintln!("aegis: cannot forward stdin to task {id}: {e}");
                }
                _ => {}
            }
        });
    }
    let interrupted = tokio::select! {
        result = stream_output(client, &id) => {
            return finish(&result?, !args.artifacts.is_empty());
        }
        _ = sigint.recv() => exit::SIGINT,
        _ = sigterm.recv() => exit::SIGTERM,
    };
    match client.cancel_task(&id).await {
        Ok(_) => eprintln!("aegis: task {id} cancelled"),
        Err(e) => eprintln!(
            "aegis: cannot cancel task {id}: {e}; cancel it with `aegis task cancel {id}`"
        ),
    }
    Ok(interrupted)
}

/// Copy the task's output to our stdout/stderr until its end; the task as it ended.
pub async fn stream_output(client: &Client, id: &str) -> anyhow::Result<Task> {
    let mut follower = client.follow_output(id, 0, 0);
    let mut sink = Sink::default();
    loop {
        let item = follower.next().await.map_err(|e| {
            anyhow::anyhow!(
                "lost the output of task {id} ({}); it may still be running: follow it with \
                 `aegis task logs --follow {id}`",
                render::chain(&e)
            )
        })?;
        match item {
            Some(FollowItem::Output { stream, data }) => sink
                .write(stream, &data)
                .context("cannot write the task's output")?,
            Some(FollowItem::End(task)) => return Ok(*task),
            Some(FollowItem::Gone) | None => {
                anyhow::bail!("the output feed of task {id} ended without the task's end")
            }
        }
    }
}

/// Report how the task ended and choose the exit code.
fn finish(task: &Task, artifacts_declared: bool) -> anyhow::Result<i32> {
    if artifacts_declared {
        if let Some(dir) = &task.artifacts_dir {
            eprintln!("aegis: artifacts copied to {dir}");
        }
    }
    let (message, code) = outcome(task);
    if let Some(message) = message {
        eprintln!("aegis: {message}");
    }
    Ok(code)
}

/// The line to print (if any) and the exit code for a task that ended.
fn outcome(task: &Task) -> (Option<String>, i32) {
    let id = &task.id;
    match task.state {
        TaskState::Exited => match task.exit_code {
            Some(code) => (None, exit::clamp(code)),
            None => (
                Some(format!("task {id} exited but aegisd reported no exit code")),
                exit::AEGIS_ERROR,
            ),
        },
        TaskState::Failed => {
            let message = task
                .error
                .clone()
                .unwrap_or_else(|| format!("task {id} failed"));
            // 126/127: the command could not be executed or found, as a shell reports it.
            (
                Some(message),
                task.exit_code.map_or(exit::AEGIS_ERROR, exit::clamp),
            )
        }
        TaskState::TimedOut => {
            let after = task
                .timeout_secs
                .map(|s| format!(" after {s}s"))
                .unwrap_or_default();
            (Some(format!("task {id} timed out{after}")), exit::TIMED_OUT)
        }
        TaskState::Cancelled => (Some(format!("task {id} was cancelled")), exit::KILLED),
        TaskState::Booting | TaskState::Running => (
            Some(format!(
                "aegisd ended the output of task {id} while it is still {}",
                task.state.as_str()
            )),
            exit::AEGIS_ERROR,
        ),
    }
}

/// Pulls an OCI image that is not pulled yet, as `docker run` does. Which names are built-in
/// images is the daemon's to say: one that is not built yet is refused by the daemon itself,
/// with the way to build it.
async fn ensure_image(client: &Client, image: &str) -> anyhow::Result<()> {
    match client.get_image(image).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => {
            let builtin = client.status().await?.builtin_images;
            if builtin.iter().any(|b| b == image) {
                return Ok(());
            }
            eprintln!("aegis: image {image} is not pulled yet; pulling it");
            crate::commands::image::pull(client, image)
                .await
                .map(drop)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "{e}. If you meant a built-in image, they are: {} (see `aegis image ls`)",
                        builtin.join(", ")
                    )
                })
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(state: TaskState, exit_code: Option<i32>, error: Option<&str>) -> Task {
        Task {
            id: "t1".into(),
            state,
            command: vec!["x".into()],
            image: "debian".into(),
            vcpus: 1,
            memory_mib: 512,
            timeout_secs: Some(5),
            exit_code,
            error: error.map(String::from),
            created_at: "2025-01-01T00:00:00Z".into(),
            started_at: None,
            ended_at: None,
            stdout_bytes: 0,
            stderr_bytes: 0,
            artifacts_dir: None,
            guest_kernel: None,
            workspace: None,
        }
    }

    #[test]
    fn exit_codes_follow_docker_and_timeout() {
        assert_eq!(outcome(&ended(TaskState::Exited, Some(0), None)), (None, 0));
        assert_eq!(outcome(&ended(TaskState::Exited, Some(3), None)), (None, 3));
        assert_eq!(outcome(&ended(TaskState::Exited, None, None)).1, 125);
        assert_eq!(
            outcome(&ended(TaskState::TimedOut, None, None)),
            (Some("task t1 timed out after 5s".into()), 124)
        );
        assert_eq!(
            outcome(&ended(TaskState::Failed, None, Some("VM failed to boot"))),
            (Some("VM failed to boot".into()), 125)
        );
        assert_eq!(
            outcome(&ended(
                TaskState::Failed,
                Some(127),
                Some("nope: command not found")
            )),
            (Some("nope: command not found".into()), 127)
        );
        assert_eq!(outcome(&ended(TaskState::Cancelled, None, None)).1, 137);
        assert_eq!(outcome(&ended(TaskState::Running, None, None)).1, 125);
        assert_eq!(outcome(&ended(TaskState::Exited, Some(-1), None)).1, 125);
    }

    #[test]
    fn the_request_carries_every_option() {
        let args = Args {
            image: Some("busybox".into()),
            env: vec![("A".into(), "1".into()), ("A".into(), "2".into())],
            cpus: Some(2),
            memory: Some(256),
            timeout: Some(30),
            artifacts: vec!["/out".into()],
            workdir: Some("/tmp".into()),
            user: Some("app".into()),
            workspace: None,
            detach: false,
            interactive: false,
            expose: Vec::new(),
            name: None,
            idle_policy: None,
            pause_after: None,
            terminate_after: None,
            wake_timeout: None,
            no_loading_page: false,
            command: vec!["true".into()],
        };
        let r = args.request();
        // The last --env for a key wins, as in a shell.
        assert_eq!(r.env.get("A").map(String::as_str), Some("2"));
        assert_eq!(
            (r.vcpus, r.memory_mib, r.timeout_secs),
            (Some(2), Some(256), Some(30))
        );
        assert_eq!(r.artifacts, ["/out"]);
        assert_eq!(r.workdir.as_deref(), Some("/tmp"));
    }

    #[test]
    fn the_serve_target_carries_every_option() {
        let args = Args {
            image: Some("debian".into()),
            env: vec![("A".into(), "1".into())],
            cpus: Some(2),
            memory: Some(1024),
            timeout: None,
            artifacts: Vec::new(),
            workdir: Some("/srv".into()),
            user: None,
            workspace: None,
            detach: true,
            interactive: false,
            expose: vec![
                parse::port_spec("8080:80:http").unwrap(),
                parse::port_spec("5432:tcp").unwrap(),
            ],
            name: Some("web".into()),
            idle_policy: Some(IdlePolicy::Idle),
            pause_after: Some(5),
            terminate_after: Some(600),
            wake_timeout: Some(30),
            no_loading_page: true,
            command: vec!["python3".into(), "app.py".into()],
        };
        assert!(args.serves());
        let r = args.instance_request();
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.command, ["python3", "app.py"]);
        assert_eq!(r.expose, args.expose);
        assert_eq!(r.idle_policy, IdlePolicy::Idle);
        assert_eq!(
            (
                r.pause_after_secs,
                r.terminate_after_secs,
                r.wake_timeout_secs
            ),
            (Some(5), Some(600), Some(30))
        );
        assert_eq!(r.loading_page, Some(false));
        assert_eq!(
            (r.vcpus, r.memory_mib, r.workdir.as_deref()),
            (Some(2), Some(1024), Some("/srv"))
        );
        assert_eq!(r.env.get("A").map(String::as_str), Some("1"));

        // Left out, the daemon's defaults apply.
        let bare = Args {
            name: None,
            idle_policy: None,
            pause_after: None,
            terminate_after: None,
            wake_timeout: None,
            no_loading_page: false,
            ..args
        }
        .instance_request();
        assert_eq!(
            (
                bare.name,
                bare.pause_after_secs,
                bare.loading_page,
                bare.idle_policy
            ),
            (None, None, None, IdlePolicy::On)
        );
    }

    #[test]
    fn the_defaults_in_the_help_are_the_daemons() {
        // `--help` and docs/CLI.md state these; update them with the constants.
        use aegis_api::instance::*;
        assert_eq!(DEFAULT_PAUSE_AFTER_SECS, 60);
        assert_eq!(DEFAULT_TERMINATE_AFTER_SECS, 1200);
        assert_eq!(DEFAULT_WAKE_TIMEOUT_SECS, 60);
    }
}
