//! `aegis app`: apps bound to pulled OCI images, their immutable releases, and which release
//! is served.

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use aegis_api::{App, AppServed, CreateApp, PortSpec, PublishRelease, Release, ServeApp};
use anyhow::Context as _;

use crate::context::Context;
use crate::parse;
use crate::render;

const AFTER_HELP: &str = "\
An app binds a name to an image you pulled (`aegis image pull REF`), the ports it serves and
optionally its command. `aegis app publish` records an immutable, numbered release: the image's
layers as pulled now plus, with --from, a directory of yours as one more layer. Releases are
disk layers only, never memory snapshots. `aegis app serve` serves a release; switching to
another release terminates the running VM and drops its memory snapshot, and the next request
boots the new release from its disk layers.

Examples:
  aegis image pull localhost:5000/busybox:1
  aegis app create site --image localhost:5000/busybox:1 --expose 8080:http \\
      -- httpd -f -p 8080 -h /app/www
  aegis app publish site --from ./public --label v1
  aegis app serve site                  # the newest release
  curl -H 'Host: site' http://127.0.0.1:8099/
  aegis app publish site --from ./public --label v2
  aegis app serve site --release 2
  aegis app rollback site               # back to release 1
  aegis app releases site; aegis app ls; aegis app rm site";

/// Apps and their releases: publish, serve, roll back.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    Create(CreateArgs),
    Publish(PublishArgs),
    Releases(ReleasesArgs),
    Serve(ServeArgs),
    Rollback(RollbackArgs),
    #[command(alias = "list")]
    Ls(LsArgs),
    Inspect(InspectArgs),
    #[command(alias = "remove")]
    Rm(RmArgs),
}

/// Create an app from a pulled image.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Without --expose, the image's ExposedPorts are served (8080/tcp as guest port 8080, http).
The command after `--` replaces the image's whole command (entrypoint and cmd).

Examples:
  aegis app create web --image localhost:5000/web:1
  aegis app create site --image busybox --expose 8080:http -- httpd -f -p 8080 -h /app/www")]
pub struct CreateArgs {
    /// App name: lowercase letters, digits, '_' and '-' (at most 63).
    name: String,
    /// A pulled image reference (`aegis image pull REF` first).
    #[arg(long, value_name = "REF")]
    image: String,
    /// A port the app serves: [HOST:]GUEST[:PROTO], PROTO http (default), tcp, grpc or
    /// websocket. Repeatable.
    #[arg(long, value_name = "[HOST:]GUEST[:PROTO]", value_parser = parse::port_spec)]
    expose: Vec<PortSpec>,
    /// The command (replaces the image's).
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

/// Publish the next release: the image's layers as pulled now, plus --from DIR.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The directory becomes one uncompressed, deterministic tar layer (same contents, same digest):
entries sorted, owner root, modes and modification times kept, symlinks stored as symlinks.
Devices, FIFOs and sockets are refused. Releases are immutable and numbered 1, 2, 3...

Examples:
  aegis app publish site --from ./public --label \"$(git rev-parse --short HEAD)\"
  aegis app publish site --from ./build --dest /srv/site
  aegis app publish web                 # the image alone (e.g. after a new pull of its tag)")]
pub struct PublishArgs {
    name: String,
    /// A directory to add as a layer on top of the image.
    #[arg(long, value_name = "DIR")]
    from: Option<PathBuf>,
    /// Where the directory appears in the guest [default: /app].
    #[arg(long, value_name = "PATH", requires = "from")]
    dest: Option<String>,
    /// A label for the release, e.g. a version or a git revision.
    #[arg(long)]
    label: Option<String>,
    /// Print the release as JSON.
    #[arg(long)]
    json: bool,
}

/// List an app's releases, oldest first.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Columns: RELEASE LABEL LAYERS SIZE MANIFEST CREATED; `*` marks the release served now. With
--json, the array of `GET /v1/apps/{name}/releases`.")]
pub struct ReleasesArgs {
    name: String,
    #[arg(long)]
    json: bool,
}

/// Serve a release of an app (the newest by default); switches a served app to it.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The first serve creates the app's instance (named after the app): nothing boots until a
request arrives. Serving another release terminates the running VM and drops its memory
snapshot; the next request boots the new release from its disk layers.

Examples:
  aegis app serve site
  aegis app serve site --release 3")]
pub struct ServeArgs {
    name: String,
    /// The release number [default: the newest].
    #[arg(long, value_name = "N")]
    release: Option<u32>,
    /// Mount a workspace at /workspace in the app's VMs: a workspace NAME (created isolated
    /// if unknown) or a host directory PATH; `:ro` after it mounts it read-only. Kept across
    /// release switches.
    #[arg(long, value_name = "NAME|PATH[:ro]", value_parser = crate::commands::workspace::workspace_arg)]
    workspace: Option<String>,
}

/// Serve the release before the one served now (or --to N).
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    name: String,
    /// The release to go back to [default: the one before the release served now].
    #[arg(long, value_name = "N")]
    to: Option<u32>,
}

/// List apps.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Columns: NAME IMAGE LATEST SERVING STATE ENDPOINTS. With --json, the array of `GET /v1/apps`.")]
pub struct LsArgs {
    #[arg(long)]
    json: bool,
}

/// Show an app: image, ports, command, newest release, what is served where.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    name: String,
    /// Print the app as JSON.
    #[arg(long)]
    json: bool,
}

/// Remove an app: its instance is stopped and removed, its releases deleted.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    name: String,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let client = ctx.client();
    match args.command {
        Command::Create(a) => {
            let app = client
                .create_app(&CreateApp {
                    name: a.name,
                    image: a.image,
                    expose: a.expose,
                    command: a.command,
                })
                .await?;
            eprintln!(
                "aegis: app {} created from {}; publish a release with `aegis app publish {}`",
                app.name, app.image, app.name
            );
        }
        Command::Publish(a) => {
            let from = match a.from {
                Some(dir) => Some(absolute(dir)?),
                None => None,
            };
            let started = Instant::now();
            let release = client
                .publish_release(
                    &a.name,
                    &PublishRelease {
                        from: from.map(|p| p.to_string_lossy().into_owned()),
                        dest: a.dest,
                        label: a.label,
                    },
                )
                .await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&release)?);
            }
            eprintln!(
                "aegis: published release {} of {} ({} layers, {}) in {}; serve it with \
                 `aegis app serve {} --release {}`",
                release.number,
                release.app,
                release.layers.len(),
                render::bytes(release.layers.iter().map(|l| l.size).sum()),
                render::elapsed(started.elapsed()),
                release.app,
                release.number
            );
        }
        Command::Releases(a) => {
            let releases = client.list_releases(&a.name).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&releases)?);
            } else {
                let served = client.get_app(&a.name).await?.serving.map(|s| s.release);
                print!("{}", releases_table(&releases, served, SystemTime::now()));
            }
        }
        Command::Serve(a) => {
            let served = client
                .serve_app(
                    &a.name,
                    &ServeApp {
                        release: a.release,
                        rollback: false,
                        workspace: a.workspace,
                    },
                )
                .await?;
            print_served(ctx, &served).await;
        }
        Command::Rollback(a) => {
            let served = client
                .serve_app(
                    &a.name,
                    &ServeApp {
                        release: a.to,
                        rollback: a.to.is_none(),
                        workspace: None,
                    },
                )
                .await?;
            print_served(ctx, &served).await;
        }
        Command::Ls(a) => {
            let apps = client.list_apps().await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&apps)?);
            } else {
                print!("{}", apps_table(&apps));
            }
        }
        Command::Inspect(a) => {
            let app = client.get_app(&a.name).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&app)?);
            } else {
                print!("{}", describe(&app));
            }
        }
        Command::Rm(a) => {
            client.delete_app(&a.name).await?;
            eprintln!(
                "aegis: app {} removed with its instance and releases",
                a.name
            );
        }
    }
    Ok(0)
}

/// The daemon resolves paths, not this shell: make a relative one absolute here.
fn absolute(dir: PathBuf) -> anyhow::Result<PathBuf> {
    if dir.is_absolute() {
        return Ok(dir);
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(cwd.join(dir))
}

async fn print_served(ctx: &Context, served: &AppServed) {
    let switched = match served.previous_release {
        Some(p) => format!(" (was release {p}; its VM was terminated and its snapshot dropped)"),
        None => String::new(),
    };
    eprintln!(
        "aegis: app {} serves release {}{switched}; the next request boots it",
        served.app, served.release
    );
    for e in &served.instance.endpoints {
        eprintln!(
            "aegis: serving {} on {} -> guest port {}",
            e.protocol.as_str(),
            e.url,
            e.guest_port
        );
    }
    let http = served
        .instance
        .endpoints
        .iter()
        .any(|e| e.protocol != aegis_api::PortProtocol::Tcp);
    if http {
        if let Ok(status) = ctx.client().status().await {
            eprintln!(
                "aegis: also on the router: http://{}/ with `Host: {}` (or http://{}.localhost:{})",
                status.router_addr,
                served.instance.name,
                served.instance.name,
                status
                    .router_addr
                    .rsplit_once(':')
                    .map(|(_, p)| p)
                    .unwrap_or("8099")
            );
        }
    }
}

fn releases_table(releases: &[Release], served: Option<u32>, now: SystemTime) -> String {
    let rows: Vec<Vec<String>> = releases
        .iter()
        .map(|r| {
            let mark = if Some(r.number) == served { "*" } else { "" };
            vec![
                format!("{}{mark}", r.number),
                r.label.clone().unwrap_or_else(|| "-".into()),
                r.layers.len().to_string(),
                render::bytes(r.layers.iter().map(|l| l.size).sum()),
                short_digest(&r.manifest_digest),
                render::age(&r.created_at, now),
            ]
        })
        .collect();
    render::table(
        &["RELEASE", "LABEL", "LAYERS", "SIZE", "MANIFEST", "CREATED"],
        &rows,
    )
}

fn apps_table(apps: &[App]) -> String {
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|a| {
            let (serving, state, endpoints) = match &a.serving {
                Some(s) => (
                    s.release.to_string(),
                    s.instance.state.as_str().to_string(),
                    s.instance
                        .endpoints
                        .iter()
                        .map(|e| format!("{}->{}", e.url, e.guest_port))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            vec![
                a.name.clone(),
                a.image.clone(),
                a.latest_release
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                serving,
                state,
                endpoints,
            ]
        })
        .collect();
    render::table(
        &["NAME", "IMAGE", "LATEST", "SERVING", "STATE", "ENDPOINTS"],
        &rows,
    )
}

fn describe(app: &App) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<10} {v}\n"));
    line("name", app.name.clone());
    line("image", app.image.clone());
    line(
        "expose",
        app.expose
            .iter()
            .map(parse::render_spec)
            .collect::<Vec<_>>()
            .join(", "),
    );
    line(
        "command",
        if app.command.is_empty() {
            "(the image's)".into()
        } else {
            render::command_line(&app.command, 80)
        },
    );
    line("created", app.created_at.clone());
    line(
        "latest",
        app.latest_release
            .map(|n| format!("release {n}"))
            .unwrap_or_else(|| "no release yet".into()),
    );
    match &app.serving {
        Some(s) => {
            line(
                "serving",
                format!(
                    "release {} as instance {} ({})",
                    s.release,
                    s.instance.name,
                    s.instance.state.as_str()
                ),
            );
            for e in &s.instance.endpoints {
                line(
                    "endpoint",
                    format!("{} -> guest port {}", e.url, e.guest_port),
                );
            }
        }
        None => line(
            "serving",
            "nothing (serve it with `aegis app serve`)".into(),
        ),
    }
    out
}

fn short_digest(d: &str) -> String {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    hex.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_api::{ReleaseConfig, ReleaseLayer};

    fn release(n: u32, label: Option<&str>) -> Release {
        Release {
            app: "site".into(),
            number: n,
            label: label.map(Into::into),
            image: "localhost:5000/busybox:1".into(),
            manifest_digest: format!("sha256:{}", "ab".repeat(32)),
            layers: vec![
                ReleaseLayer {
                    digest: "sha256:00".into(),
                    media_type: "x".into(),
                    size: 1024,
                },
                ReleaseLayer {
                    digest: "sha256:01".into(),
                    media_type: "x".into(),
                    size: 1024,
                },
            ],
            config: ReleaseConfig::default(),
            created_at: "2025-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn releases_table_marks_the_served_one() {
        let now = humantime::parse_rfc3339("2025-01-01T00:05:00Z").unwrap();
        let out = releases_table(&[release(1, Some("v1")), release(2, None)], Some(1), now);
        let lines: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines[0],
            ["RELEASE", "LABEL", "LAYERS", "SIZE", "MANIFEST", "CREATED"]
        );
        assert_eq!(lines[1][0], "1*");
        assert_eq!(lines[1][1], "v1");
        assert!(lines[1].contains(&"abababababab"), "{out}");
        assert!(out.contains("2.0 KiB") || out.contains("2 KiB"), "{out}");
        assert_eq!(lines[2][0], "2");
        assert_eq!(lines[2][1], "-");
    }

    #[test]
    fn relative_dirs_become_absolute() {
        let p = absolute(PathBuf::from("public")).unwrap();
        assert!(p.is_absolute() && p.ends_with("public"));
        assert_eq!(absolute(PathBuf::from("/x")).unwrap(), PathBuf::from("/x"));
    }
}
