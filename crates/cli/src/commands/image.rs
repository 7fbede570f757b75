//! `aegis image`: pull OCI images, list, inspect and remove images.

use aegis_api::{ImageInfo, ImageKind, PullEvent};
use aegis_client::Client;

use crate::context::Context;
use crate::progress::BuildProgress;
use crate::render;

const AFTER_HELP: &str = "\
Images are what VMs boot. The built-in ones (busybox, debian) are built by `aegis setup`;
OCI images are pulled from any OCI / Docker registry: each layer is stored once (verified by
its digest) and made into a read-only disk once; a VM stacks the disks with overlayfs under
its own writable layer. `aegis run --image REF` pulls a missing image itself, and honours
its Entrypoint, Cmd, Env, WorkingDir and User as `docker run` does. See docs/IMAGES.md.

Examples:
  aegis image pull alpine:3.21
  aegis image pull localhost:5000/team/agent:v3
  aegis image ls
  aegis image inspect alpine:3.21 --json | jq .env
  aegis image rm alpine:3.21";

/// Pull, list, inspect and remove images.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    Pull(PullArgs),
    #[command(alias = "list")]
    Ls(LsArgs),
    Inspect(InspectArgs),
    #[command(alias = "remove")]
    Rm(RmArgs),
}

/// Pull an OCI image from its registry (progress on stderr; prints the canonical reference).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
REF: [REGISTRY/]REPOSITORY[:TAG|@sha256:DIGEST]; Docker Hub and `latest` when left out.
Registries on loopback are spoken to over HTTP, all others over HTTPS. Logins: per
registry in <aegis home>/auth.json (Docker config.json shape: {\"auths\": {\"host[:port]\":
{\"auth\": \"<base64 of user:password>\"}}}); see docs/IMAGES.md.

Examples:
  aegis image pull alpine
  aegis image pull 127.0.0.1:5000/test/app:v1")]
pub struct PullArgs {
    /// The image reference.
    #[arg(value_name = "REF")]
    reference: String,
}

/// List images: built-in and pulled.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Columns: REFERENCE KIND LAYERS SIZE DIGEST USED-BY. With --json, the array of
`GET /v1/images`.")]
pub struct LsArgs {
    /// Print the images as a JSON array.
    #[arg(long)]
    json: bool,
}

/// Show one image: digest, layers, configuration, users.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    #[arg(value_name = "REF")]
    reference: String,
    /// Print the image as JSON.
    #[arg(long)]
    json: bool,
}

/// Remove pulled images (refused while an instance or a running task uses one). Layers
/// that releases of apps still use are kept.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    #[arg(required = true, value_name = "REF")]
    references: Vec<String>,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let client = ctx.client();
    match args.command {
        Command::Pull(a) => {
            let image = pull(client, &a.reference).await?;
            println!("{}", image.reference);
            Ok(0)
        }
        Command::Ls(a) => {
            let all = client.list_images().await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                print!("{}", table(&all));
            }
            Ok(0)
        }
        Command::Inspect(a) => {
            let image = client.get_image(&a.reference).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&image)?);
            } else {
                print!("{}", details(&image));
            }
            Ok(0)
        }
        Command::Rm(a) => {
            Ok(
                crate::commands::remove_each("image", &a.references, |r| client.delete_image(r))
                    .await,
            )
        }
    }
}

/// Pulls `reference` with a progress bar on stderr; the pulled image on success.
pub async fn pull(client: &Client, reference: &str) -> anyhow::Result<ImageInfo> {
    use aegis_image::Progress as _;
    let progress = BuildProgress::new(&format!("pull {reference}"));
    let mut events = client.pull_image(reference).await?;
    let mut length = None;
    while let Some(event) = events.next_event().await? {
        match event {
            PullEvent::Progress {
                message,
                done,
                total,
            } => {
                progress.set_message(&message);
                if total != length {
                    if let Some(t) = total {
                        progress.set_length(t);
                    }
                    length = total;
                }
                progress.set_position(done);
            }
            PullEvent::Done { image } => {
                progress.finish();
                return Ok(image);
            }
            PullEvent::Error { error } => {
                progress.finish();
                anyhow::bail!("cannot pull {reference}: {}", error.message);
            }
        }
    }
    progress.finish();
    anyhow::bail!("cannot pull {reference}: aegisd ended the pull without a result; see its log")
}

fn short_digest(d: &Option<String>) -> String {
    d.as_deref()
        .and_then(|d| d.strip_prefix("sha256:"))
        .map(|h| h.chars().take(12).collect())
        .unwrap_or_else(|| "-".into())
}

fn used_by(i: &ImageInfo) -> String {
    if i.used_by.is_empty() {
        "-".into()
    } else {
        i.used_by.join(",")
    }
}

fn kind(i: &ImageInfo) -> &'static str {
    match i.kind {
        ImageKind::Builtin => "builtin",
        ImageKind::Oci => "oci",
    }
}

fn table(all: &[ImageInfo]) -> String {
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|i| {
            vec![
                i.reference.clone(),
                kind(i).into(),
                i.layers.to_string(),
                render::bytes(i.size_bytes),
                short_digest(&i.digest),
                used_by(i),
            ]
        })
        .collect();
    render::table(
        &["REFERENCE", "KIND", "LAYERS", "SIZE", "DIGEST", "USED-BY"],
        &rows,
    )
}

fn details(i: &ImageInfo) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            serde_json::to_string(v).unwrap_or_default()
        }
    };
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    render::key_values(&[
        ("reference", i.reference.clone()),
        ("kind", kind(i).into()),
        ("digest", i.digest.clone().unwrap_or("-".into())),
        ("layers", i.layers.to_string()),
        ("size", render::bytes(i.size_bytes)),
        ("entrypoint", list(&i.entrypoint)),
        ("cmd", list(&i.cmd)),
        ("env", list(&i.env)),
        ("workdir", or_dash(&i.working_dir)),
        ("user", or_dash(&i.user)),
        ("exposed ports", list(&i.exposed_ports)),
        ("used by", used_by(i)),
    ])
}
