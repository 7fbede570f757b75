//! `aegis setup`: build the guest kernel and base images into the cache.

use std::time::Instant;

use aegis_image::{BaseImage, ImageStatus, Layout};
use anyhow::Context as _;

use crate::context::Context;
use crate::progress::BuildProgress;
use crate::render;

const AFTER_HELP: &str = "\
Builds what microVMs boot from, under <home>/cache, from Debian packages (no Docker):
  - the guest kernel, from linux-source-6.1 with Aegis's own configuration (about 8 minutes
    on 2 cores; cached by configuration hash, rebuilt only when that changes);
  - the base images: busybox (~3 MB, seconds) and debian (bookworm + python3, ~250 MB, needs
    root for debootstrap; AEGIS_DEBIAN_MIRROR picks the mirror).
Anything already built from the current recipe is skipped, so running it again is cheap.
Set AEGIS_KERNEL to a vmlinux of your own to skip the kernel build.

Examples:
  sudo aegis setup
  aegis setup --images-only --image busybox
  aegis setup --kernel-only";

/// Build the guest kernel and base images (skipping what is up to date).
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Build only the kernel.
    #[arg(long, conflicts_with_all = ["images_only", "images"])]
    kernel_only: bool,

    /// Build only the images.
    #[arg(long)]
    images_only: bool,

    /// Build only this image (busybox or debian); repeatable. Default: all of them.
    #[arg(long = "image", value_name = "NAME", value_parser = parse_image)]
    images: Vec<BaseImage>,
}

fn parse_image(s: &str) -> Result<BaseImage, String> {
    BaseImage::from_name(s).map_err(|_| {
        let names: Vec<&str> = BaseImage::ALL.iter().map(|i| i.name()).collect();
        format!("unknown image; the base images are {}", names.join(", "))
    })
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<i32> {
    let layout = ctx.home();
    if !args.images_only {
        kernel(layout)?;
    }
    if !args.kernel_only {
        let mut images = if args.images.is_empty() {
            BaseImage::ALL.to_vec()
        } else {
            args.images
        };
        images.dedup();
        for image in images {
            build_image(layout, image)?;
        }
    }
    println!("setup complete; start the daemon with `aegis up`");
    Ok(0)
}

fn kernel(layout: &Layout) -> anyhow::Result<()> {
    let user_kernel = std::env::var_os(aegis_image::KERNEL_ENV).filter(|v| !v.is_empty());
    if user_kernel.is_some() {
        let path = aegis_image::kernel_path(layout)?;
        println!(
            "kernel: using {} from {} (not building)",
            path.display(),
            aegis_image::KERNEL_ENV
        );
        return Ok(());
    }
    let hash = aegis_image::kernel_config_hash();
    if let Some(path) = aegis_image::find_kernel(layout) {
        println!("kernel up to date (hash {hash}): {}", path.display());
        return Ok(());
    }
    println!("building the guest kernel (hash {hash}); this takes several minutes");
    let started = Instant::now();
    let progress = BuildProgress::new("kernel");
    let path =
        aegis_image::build_kernel(layout, &progress).context("the guest kernel build failed")?;
    drop(progress);
    println!(
        "kernel built in {}: {}",
        render::elapsed(started.elapsed()),
        path.display()
    );
    Ok(())
}

fn build_image(layout: &Layout, image: BaseImage) -> anyhow::Result<()> {
    let name = image.name();
    match aegis_image::image_status(layout, image) {
        ImageStatus::Ready => {
            println!(
                "image {name} up to date: {}",
                aegis_image::image_file(layout, image).display()
            );
            return Ok(());
        }
        ImageStatus::Stale => println!("rebuilding image {name}: its recipe changed"),
        ImageStatus::Missing => println!("building image {name}: {}", image.description()),
    }
    let started = Instant::now();
    let progress = BuildProgress::new(name);
    let path = aegis_image::build_image(layout, image, &progress)
        .with_context(|| format!("building image {name} failed"))?;
    drop(progress);
    let size = std::fs::metadata(&path)
        .map(|m| format!(", {}", render::bytes(m.len())))
        .unwrap_or_default();
    println!(
        "image {name} built in {}: {}{size}",
        render::elapsed(started.elapsed()),
        path.display()
    );
    Ok(())
}
