//! `aegis workspace`: create, list, inspect and remove workspaces; and the `--workspace`
//! argument of `aegis run`.

use std::path::Path;
use std::time::SystemTime;

use aegis_api::{CreateWorkspace, Workspace, WorkspaceMode, WorkspaceSpec};

use crate::context::Context;
use crate::render;

const AFTER_HELP: &str = "\
A workspace is a directory that outlives VMs: `aegis run --workspace NAME` mounts it at
/workspace in the guest, reads and writes go straight to the host, and the data stays when
the VM ends (it is never part of a memory snapshot). Isolated workspaces (the default) are
used by one task or instance at a time; shared ones by any number at once. A task holds its
workspace while it runs, a served instance for as long as it exists. `run --workspace PATH`
mounts a host directory instead (no workspace object). Add `:ro` (`--workspace data:ro`,
`--workspace ./src:ro`) to mount it read-only: the host refuses every write, whatever the
guest does. See docs/WORKSPACES.md.

Examples:
  aegis workspace create data
  aegis workspace create team --shared
  aegis run --workspace data -- sh -c 'echo hi > /workspace/note'
  aegis run --workspace ./src:ro -- make -C /workspace check
  aegis workspace ls
  aegis workspace inspect data | jq .used_by
  aegis workspace rm data";

/// Create, list, inspect and remove workspaces (durable /workspace directories).
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    Create(CreateArgs),
    #[command(alias = "list")]
    Ls(LsArgs),
    Inspect(InspectArgs),
    #[command(alias = "remove")]
    Rm(RmArgs),
}

/// Create a workspace (isolated unless --shared).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
NAME: 1-63 of lowercase letters, digits, '_', '.' and '-', starting with a letter or digit.
Prints the workspace's name.

Examples:
  aegis workspace create data
  aegis workspace create team --shared")]
pub struct CreateArgs {
    /// The workspace name.
    name: String,
    /// Let any number of tasks and instances use it at the same time (they all see each
    /// other's writes at once; see docs/WORKSPACES.md for what is safe).
    #[arg(long)]
    shared: bool,
}

/// List workspaces.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Columns: NAME MODE SIZE CREATED USED-BY. USED-BY lists the tasks and instances holding the
workspace now. With --json, the array of workspace objects of `GET /v1/workspaces`.

Examples:
  aegis workspace ls
  aegis workspace ls --json | jq -r '.[] | select(.used_by == []) | .name'")]
pub struct LsArgs {
    /// Print the workspaces as a JSON array.
    #[arg(long)]
    json: bool,
}

/// Show one workspace: mode, host path, size, creation time, holders.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  aegis workspace inspect data
  aegis workspace inspect data --json | jq -r .path")]
pub struct InspectArgs {
    /// The workspace name.
    name: String,
    /// Print the workspace as JSON.
    #[arg(long)]
    json: bool,
}

/// Remove workspaces and their data (refused while a task or instance uses one).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Prints each removed name; exits 125 if any could not be removed (the others still are).

Example:
  aegis workspace rm data")]
pub struct RmArgs {
    /// The workspace names.
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let client = ctx.client();
    match args.command {
        Command::Create(a) => {
            let mode = if a.shared {
                WorkspaceMode::Shared
            } else {
                WorkspaceMode::Isolated
            };
            let ws = client
                .create_workspace(&CreateWorkspace { name: a.name, mode })
                .await?;
            println!("{}", ws.name);
            Ok(0)
        }
        Command::Ls(a) => {
            let all = client.list_workspaces().await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                print!("{}", table(&all, SystemTime::now()));
            }
            Ok(0)
        }
        Command::Inspect(a) => {
            let ws = client.get_workspace(&a.name).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&ws)?);
            } else {
                print!("{}", details(&ws));
            }
            Ok(0)
        }
        Command::Rm(a) => {
            Ok(
                crate::commands::remove_each("workspace", &a.names, |n| client.delete_workspace(n))
                    .await,
            )
        }
    }
}

fn used_by(ws: &Workspace) -> String {
    if ws.used_by.is_empty() {
        "-".into()
    } else {
        ws.used_by.join(",")
    }
}

fn table(all: &[Workspace], now: SystemTime) -> String {
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|w| {
            vec![
                w.name.clone(),
                w.mode.as_str().to_string(),
                render::bytes(w.size_bytes),
                render::age(&w.created_at, now),
                used_by(w),
            ]
        })
        .collect();
    render::table(&["NAME", "MODE", "SIZE", "CREATED", "USED-BY"], &rows)
}

fn details(ws: &Workspace) -> String {
    render::key_values(&[
        ("name", ws.name.clone()),
        ("mode", ws.mode.as_str().to_string()),
        ("path", ws.path.clone()),
        ("size", render::bytes(ws.size_bytes)),
        ("created", ws.created_at.clone()),
        ("used by", used_by(ws)),
    ])
}

/// The value of `run --workspace`: `NAME|PATH[:ro]`, a workspace name as given, or a host
/// directory made absolute and canonical (anything with a '/' or starting with '.' is a
/// path), followed by `:ro` when asked for read-only.
pub fn workspace_arg(value: &str) -> Result<String, String> {
    let mut spec = WorkspaceSpec::parse(value);
    let target = spec.target.as_str();
    if target.is_empty() {
        return Err("a workspace name or a directory is required".into());
    }
    if !(target.contains('/') || target.starts_with('.')) {
        return Ok(spec.to_request());
    }
    let canonical = std::fs::canonicalize(Path::new(target))
        .map_err(|e| format!("workspace directory '{target}' cannot be used: {e}"))?;
    if !canonical.is_dir() {
        return Err(format!(
            "workspace '{target}' is not a directory; pass a directory or a workspace name"
        ));
    }
    spec.target = canonical
        .to_str()
        .map(str::to_string)
        .ok_or_else(|| format!("workspace directory '{target}' is not valid UTF-8"))?;
    Ok(spec.to_request())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_arguments() {
        assert_eq!(workspace_arg("data").unwrap(), "data");
        let dir = tempfile::tempdir().unwrap();
        let canonical = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(
            workspace_arg(dir.path().to_str().unwrap()).unwrap(),
            canonical.to_str().unwrap()
        );
        let with_dots = format!("{}/./", dir.path().display());
        assert_eq!(
            workspace_arg(&with_dots).unwrap(),
            canonical.to_str().unwrap()
        );
        assert!(workspace_arg("./definitely-missing-dir")
            .unwrap_err()
            .contains("cannot be used"));
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(workspace_arg(file.to_str().unwrap())
            .unwrap_err()
            .contains("not a directory"));
        assert!(workspace_arg("").is_err());
        assert!(workspace_arg(":ro").is_err());
        assert_eq!(workspace_arg("data:ro").unwrap(), "data:ro");
        assert_eq!(workspace_arg("data:rw").unwrap(), "data");
        assert_eq!(
            workspace_arg(&format!("{}:ro", dir.path().display())).unwrap(),
            format!("{}:ro", canonical.display())
        );
    }

    #[test]
    fn rendering() {
        let ws = Workspace {
            name: "data".into(),
            mode: WorkspaceMode::Shared,
            path: "/h/workspaces/data".into(),
            size_bytes: 1536,
            created_at: "2026-01-01T00:00:00Z".into(),
            used_by: vec!["task-1".into(), "inst-2".into()],
        };
        let now = humantime::parse_rfc3339("2026-01-01T00:01:00Z").unwrap();
        let t = table(std::slice::from_ref(&ws), now);
        assert!(t.starts_with("NAME"), "{t}");
        assert!(
            t.contains("data   shared   1.5 KiB   1m ago    task-1,inst-2"),
            "{t}"
        );
        let d = details(&ws);
        assert!(d.contains("path:      /h/workspaces/data"), "{d}");
        assert!(d.contains("used by:   task-1,inst-2"), "{d}");
    }
}
