//! Build the guest artefacts into the Aegis cache without the CLI.
//!
//! ```text
//! cargo run -p aegis-image --example build-guest -- [all|kernel|busybox|debian|list]
//! cargo run -p aegis-image --example build-guest -- initramfs HARNESS_BINARY
//! cargo run -p aegis-image --example build-guest -- scratch PATH SIZE_MIB
//! ```
//!
//! Uses `$AEGIS_HOME` (default `~/.aegis`). `aegis setup` does the same with a nicer UI.

use std::cell::Cell;
use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use aegis_image::{
    build_image, build_kernel, list_images, BaseImage, ImageStatus, Layout, Progress,
};

/// Prints phase messages and a percentage every 10 %.
#[derive(Default)]
struct Printer {
    len: Cell<u64>,
    last_decile: Cell<u64>,
}

impl Progress for Printer {
    fn set_message(&self, msg: &str) {
        eprintln!("  {msg}");
    }
    fn set_length(&self, len: u64) {
        self.len.set(len.max(1));
    }
    fn set_position(&self, pos: u64) {
        let decile = pos * 10 / self.len.get().max(1);
        if decile != self.last_decile.get() {
            self.last_decile.set(decile);
            eprint!("  {}%\r", decile * 10);
            let _ = std::io::stderr().flush();
        }
    }
    fn finish(&self) {}
}

/// `initramfs HARNESS` and `scratch PATH MIB`: print the path of the artefact made.
fn one_off(what: &str, layout: &Layout) -> Option<ExitCode> {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let result = match (what, args.as_slice()) {
        ("initramfs", [harness]) => aegis_image::ensure_initramfs(layout, harness.as_ref()),
        ("scratch", [path, mib]) => match mib.parse::<u64>() {
            Ok(mib) => {
                aegis_image::create_scratch_disk(path.as_ref(), mib << 20).map(|()| path.into())
            }
            Err(e) => {
                eprintln!("error: size in MiB expected: {e}");
                return Some(ExitCode::FAILURE);
            }
        },
        _ => return None,
    };
    Some(match result {
        Ok(path) => {
            println!("{}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    })
}

fn main() -> ExitCode {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let layout = match Layout::from_env() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(code) = one_off(&what, &layout) {
        return code;
    }
    let mut targets: Vec<&str> = match what.as_str() {
        "all" => vec!["kernel", "busybox", "debian"],
        "list" => vec![],
        other => vec![other],
    };
    targets.dedup();
    for target in targets {
        let started = Instant::now();
        eprintln!("{target}:");
        let result = match target {
            "kernel" => build_kernel(&layout, &Printer::default()),
            name => BaseImage::from_name(name)
                .and_then(|image| build_image(&layout, image, &Printer::default())),
        };
        match result {
            Ok(path) => eprintln!(
                "\n  done in {:.1}s: {}",
                started.elapsed().as_secs_f32(),
                path.display()
            ),
            Err(e) => {
                let mut msg = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    msg.push_str(&format!(": {s}"));
                    source = s.source();
                }
                eprintln!("error: {msg}");
                return ExitCode::FAILURE;
            }
        }
    }
    for row in list_images(&layout) {
        let status = match row.status {
            ImageStatus::Ready => "ready",
            ImageStatus::Stale => "stale",
            ImageStatus::Missing => "missing",
        };
        println!(
            "{:<8} {:<8} {:>6} MiB  {}",
            row.image,
            status,
            row.size_bytes.unwrap_or(0) >> 20,
            row.path.display()
        );
    }
    match aegis_image::kernel_path(&layout) {
        Ok(p) => println!("kernel   ready           {}", p.display()),
        Err(e) => println!("kernel   missing         {e}"),
    }
    ExitCode::SUCCESS
}
