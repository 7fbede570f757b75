//! Apps and releases (docs/APPS.md).
//!
//! An app binds a name to a pulled OCI image reference, the ports it serves and an optional
//! command. Publishing records release N+1: the image's layers as pulled now (pinned by the
//! manifest digest, so a later re-pull of the tag does not change it) plus, optionally, one
//! layer built from a host directory. A release is disk layers only, never a memory snapshot.
//! Serving an app creates the instance bound to it, or switches that instance to another
//! release: its VM is terminated and its memory snapshot dropped (a snapshot belongs to the
//! layers it was taken on and must never restore into another release).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aegis_api::{
    ApiError, App, AppServed, AppServing, CreateApp, CreateInstance, ErrorCode, PublishRelease,
    Release, ReleaseConfig, ReleaseLayer, ServeApp,
};
use aegis_oci::{ImageConfig, LayerRecord};
use aegis_registry::{AppRecord, NewRelease};

use crate::api::{bad, internal};
use crate::config::Config;
use crate::daemon::Daemon;
use crate::guest::BootAssets;
use crate::ids;
use crate::instances::runtime::InstanceRuntime;

/// Longest release label.
const MAX_LABEL: usize = 200;

/// Serializes the operations that change which release an app serves (serve, rollback,
/// removal), so two of them never interleave.
#[derive(Default)]
pub struct AppManager {
    serving: tokio::sync::Mutex<()>,
}

fn err(code: ErrorCode, message: String) -> ApiError {
    ApiError::new(code, message)
}

fn no_app(name: &str) -> ApiError {
    err(
        ErrorCode::NotFound,
        format!(
            "no app '{name}'; list apps with `aegis app ls`, create one with `aegis app create`"
        ),
    )
}

/// The boot root of a release: its disk layers and the process it runs.
pub struct ReleaseRoot {
    pub assets: BootAssets,
    pub release: Release,
}

impl ReleaseRoot {
    /// The served process: the release's command, environment and working directory.
    pub fn process(&self) -> ReleaseProcess {
        let config = &self.release.config;
        ReleaseProcess {
            argv: config.command(),
            env: config.env_map().into_iter().collect(),
            cwd: Some(config.working_dir.clone()).filter(|w| !w.is_empty()),
            user: Some(config.user.clone()).filter(|u| !u.is_empty()),
        }
    }
}

/// What the instance runs for a release (applied over its ServeTarget's command).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseProcess {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    /// The image's `User`; root when absent.
    pub user: Option<String>,
}

/// Builds the boot root of release `number` of `app`: the release's layers as read-only
/// disks (built once per layer digest), with the guest kernel and initramfs.
pub async fn release_root(
    daemon: &Arc<Daemon>,
    app: &str,
    number: u32,
) -> Result<ReleaseRoot, ApiError> {
    let release = daemon
        .registry
        .release(app, number)
        .map_err(|e| internal(format!("cannot read the registry: {e}")))?
        .ok_or_else(|| {
            err(
                ErrorCode::NotFound,
                format!(
                    "app '{app}' has no release {number}; list them with `aegis app releases {app}`"
                ),
            )
        })?;
    let layers: Vec<LayerRecord> = release.layers.iter().map(layer_record).collect();
    let disks = daemon.images.layer_disks(&layers).await?;
    let assets = daemon.guest.boot_assets(disks)?;
    Ok(ReleaseRoot { assets, release })
}

fn layer_record(l: &ReleaseLayer) -> LayerRecord {
    LayerRecord {
        digest: l.digest.clone(),
        media_type: l.media_type.clone(),
        size: l.size,
    }
}

fn release_layer(l: &LayerRecord) -> ReleaseLayer {
    ReleaseLayer {
        digest: l.digest.clone(),
        media_type: l.media_type.clone(),
        size: l.size,
    }
}

/// The image's configuration with the app's command override (which replaces entrypoint and
/// cmd alike).
pub fn release_config(image: &ImageConfig, command: &[String]) -> ReleaseConfig {
    let (entrypoint, cmd) = if command.is_empty() {
        (image.entrypoint.clone(), image.cmd.clone())
    } else {
        (vec![], command.to_vec())
    };
    ReleaseConfig {
        entrypoint,
        cmd,
        env: image.env.clone(),
        working_dir: image.working_dir.clone(),
        user: image.user.clone(),
        exposed_ports: image.exposed_ports.clone(),
        labels: image.labels.clone(),
    }
}

/// The instance name of an app: its name, with `_` (not allowed in host names) as `-`.
pub fn instance_name(app: &str) -> String {
    app.replace('_', "-")
}

impl AppManager {
    /// `POST /v1/apps`.
    pub async fn create(&self, daemon: &Arc<Daemon>, req: CreateApp) -> Result<App, ApiError> {
        aegis_api::app::validate_app_name(&req.name).map_err(bad)?;
        let image = daemon.images.get(&req.image)?;
        let expose = if req.expose.is_empty() {
            let ports = crate::images::exposed_ports(&image.config);
            if ports.is_empty() {
                return Err(bad(format!(
                    "image {} declares no TCP ports (ExposedPorts); say which ports the app \
                     serves with --expose, e.g. --expose 8080:http",
                    image.reference
                )));
            }
            ports
        } else {
            req.expose.clone()
        };
        let config = release_config(&image.config, &req.command);
        let probe = CreateInstance {
            name: Some(instance_name(&req.name)),
            command: config.command(),
            expose: expose.clone(),
            ..Default::default()
        };
        if probe.command.is_empty() {
            return Err(bad(format!(
                "image {} has no command (no Entrypoint or Cmd); give the app one after `--`, \
                 e.g. `aegis app create {} --image {} -- httpd -f -p 8080`",
                image.reference, req.name, req.image
            )));
        }
        crate::instances::validate(&probe, &crate::vm_request::HostLimits::probe())?;
        let record = AppRecord {
            name: req.name.clone(),
            image: image.reference.clone(),
            expose,
            command: req.command,
            created_at: ids::now(),
        };
        let inserted = daemon
            .registry
            .insert_app(&record)
            .map_err(|e| internal(format!("cannot record the app: {e}")))?;
        if !inserted {
            return Err(err(
                ErrorCode::Conflict,
                format!(
                    "an app named '{}' already exists; pick another name or remove it with \
                     `aegis app rm {}`",
                    req.name, req.name
                ),
            ));
        }
        tracing::info!(app = %record.name, image = %record.image, "app created");
        self.view(daemon, record)
    }

    fn record(&self, daemon: &Daemon, name: &str) -> Result<AppRecord, ApiError> {
        daemon
            .registry
            .get_app(name)
            .map_err(|e| internal(format!("cannot read the registry: {e}")))?
            .ok_or_else(|| no_app(name))
    }

    fn view(&self, daemon: &Daemon, record: AppRecord) -> Result<App, ApiError> {
        let latest = daemon
            .registry
            .latest_release(&record.name)
            .map_err(|e| internal(format!("cannot read the registry: {e}")))?
            .map(|r| r.number);
        let serving = instance_of(daemon, &record.name).map(|rt| {
            let instance = rt.view();
            AppServing {
                release: instance.target.release.unwrap_or_default(),
                instance,
            }
        });
        Ok(App {
            name: record.name,
            image: record.image,
            expose: record.expose,
            command: record.command,
            created_at: record.created_at,
            latest_release: latest,
            serving,
        })
    }

    pub fn get(&self, daemon: &Daemon, name: &str) -> Result<App, ApiError> {
        let record = self.record(daemon, name)?;
        self.view(daemon, record)
    }

    pub fn list(&self, daemon: &Daemon) -> Result<Vec<App>, ApiError> {
        daemon
            .registry
            .list_apps()
            .map_err(|e| internal(format!("cannot read the registry: {e}")))?
            .into_iter()
            .map(|r| self.view(daemon, r))
            .collect()
    }

    pub fn releases(&self, daemon: &Daemon, name: &str) -> Result<Vec<Release>, ApiError> {
        self.record(daemon, name)?;
        daemon
            .registry
            .releases(name)
            .map_err(|e| internal(format!("cannot read the registry: {e}")))
    }

    /// `POST /v1/apps/{name}/releases`: records release N+1 from the image as stored now
    /// plus, with `from`, a layer built from that host directory.
    pub async fn publish(
        &self,
        daemon: &Arc<Daemon>,
        name: &str,
        req: PublishRelease,
    ) -> Result<Release, ApiError> {
        let app = self.record(daemon, name)?;
        if let Some(label) = &req.label {
            if label.chars().count() > MAX_LABEL || label.chars().any(char::is_control) {
                return Err(bad(format!(
                    "invalid label: use at most {MAX_LABEL} characters and no control characters"
                )));
            }
        }
        let dest = req
            .dest
            .clone()
            .unwrap_or_else(|| aegis_api::app::DEFAULT_RELEASE_DEST.to_string());
        if req.from.is_none() && req.dest.is_some() {
            return Err(bad(
                "--dest only says where a --from directory goes; give --from DIR too",
            ));
        }
        // GC must not collect the directory layer between its blob and its release record.
        let _gc = daemon.images.hold_gc().await;
        let image = daemon.images.get(&app.image)?;
        let mut layers: Vec<ReleaseLayer> = image.layers.iter().map(release_layer).collect();
        if let Some(from) = &req.from {
            let dir = check_source_dir(&daemon.config, Path::new(from))?;
            let store = daemon.images.store().clone();
            let started = std::time::Instant::now();
            let layer = tokio::task::spawn_blocking(move || store.import_dir_layer(&dir, &dest))
                .await
                .map_err(|e| internal(format!("the layer builder failed: {e}")))?
                .map_err(|e| match e {
                    aegis_oci::Error::SourceDir { .. }
                    | aegis_oci::Error::UnsupportedFile { .. }
                    | aegis_oci::Error::BadDestination { .. } => bad(e.to_string()),
                    other => internal(format!("cannot build a layer from {from}: {other}")),
                })?;
            tracing::info!(app = %name, digest = %layer.digest, bytes = layer.size, ms = started.elapsed().as_millis() as u64, "directory layer stored");
            layers.push(release_layer(&layer));
        }
        let new = NewRelease {
            label: req.label,
            image: image.reference.clone(),
            manifest_digest: image.manifest_digest.clone(),
            layers,
            config: release_config(&image.config, &app.command),
            created_at: ids::now(),
        };
        let release = daemon
            .registry
            .publish_release(name, &new)
            .map_err(|e| internal(format!("cannot record the release: {e}")))?
            .ok_or_else(|| no_app(name))?;
        tracing::info!(app = %name, release = release.number, layers = release.layers.len(), "release published");
        Ok(release)
    }

    /// `POST /v1/apps/{name}/serve`: serve a release (new instance, or switch the app's
    /// instance to it).
    pub async fn serve(
        &self,
        daemon: &Arc<Daemon>,
        name: &str,
        req: ServeApp,
    ) -> Result<AppServed, ApiError> {
        let _serving = self.serving.lock().await;
        let app = self.record(daemon, name)?;
        let existing = instance_of(daemon, name);
        let current = existing.as_ref().and_then(|rt| rt.release());
        let number = match (req.release, req.rollback) {
            (Some(n), _) => n,
            (None, true) => {
                let current = current.ok_or_else(|| {
                    err(
                        ErrorCode::Conflict,
                        format!(
                            "app '{name}' is not served, so there is nothing to roll back; serve \
                             a release with `aegis app serve {name} --release N`"
                        ),
                    )
                })?;
                self.releases(daemon, name)?
                    .iter()
                    .map(|r| r.number)
                    .filter(|n| *n < current)
                    .max()
                    .ok_or_else(|| {
                        err(
                            ErrorCode::Conflict,
                            format!(
                                "app '{name}' serves release {current}, its first: there is no \
                                 earlier release to roll back to"
                            ),
                        )
                    })?
            }
            (None, false) => daemon
                .registry
                .latest_release(name)
                .map_err(|e| internal(format!("cannot read the registry: {e}")))?
                .map(|r| r.number)
                .ok_or_else(|| {
                    err(
                        ErrorCode::Conflict,
                        format!(
                            "app '{name}' has no release yet; publish one with \
                             `aegis app publish {name}`"
                        ),
                    )
                })?,
        };
        let release = daemon
            .registry
            .release(name, number)
            .map_err(|e| internal(format!("cannot read the registry: {e}")))?
            .ok_or_else(|| {
                err(
                    ErrorCode::NotFound,
                    format!(
                        "app '{name}' has no release {number}; list them with \
                         `aegis app releases {name}`"
                    ),
                )
            })?;
        let instance = match existing {
            Some(rt) => {
                if req.workspace.is_some() && req.workspace != rt.target.workspace {
                    return Err(err(
                        ErrorCode::Conflict,
                        format!(
                            "app '{name}' is served with workspace {}; a served app keeps its \
                             workspace across releases. To change it, remove the instance \
                             (`aegis instance rm {}`) and serve again",
                            rt.target.workspace.as_deref().unwrap_or("(none)"),
                            rt.name
                        ),
                    ));
                }
                if current != Some(number) {
                    daemon
                        .registry
                        .set_instance_release(&rt.id, number)
                        .map_err(|e| {
                            internal(format!("cannot record the instance's release: {e}"))
                        })?;
                    rt.switch_release(number).await;
                    tracing::info!(app = %name, instance = %rt.id, from = ?current, to = number, "switched release");
                }
                rt.view()
            }
            None => {
                let config = &release.config;
                let req = CreateInstance {
                    name: Some(instance_name(name)),
                    command: config.command(),
                    env: config.env_map(),
                    workdir: Some(config.working_dir.clone()).filter(|w| !w.is_empty()),
                    expose: app.expose.clone(),
                    app: Some(name.to_string()),
                    release: Some(number),
                    workspace: req.workspace.clone(),
                    ..Default::default()
                };
                daemon.instances.create(daemon, req).await?
            }
        };
        Ok(AppServed {
            app: name.to_string(),
            release: number,
            previous_release: current.filter(|c| *c != number),
            instance,
        })
    }

    /// `DELETE /v1/apps/{name}`: removes the app's instance (VM, listeners, snapshot), then
    /// the app and its releases; the blobs only they used are then garbage.
    pub async fn remove(&self, daemon: &Arc<Daemon>, name: &str) -> Result<(), ApiError> {
        let _serving = self.serving.lock().await;
        self.record(daemon, name)?;
        if let Some(rt) = instance_of(daemon, name) {
            daemon.instances.delete(daemon, &rt.id).await?;
        }
        daemon
            .registry
            .delete_app(name)
            .map_err(|e| internal(format!("cannot delete the app: {e}")))?;
        tracing::info!(app = %name, "app removed");
        // The blobs and disks only its releases used are garbage now. Failing to collect
        // them is no reason to fail the removal: the next collection gets them.
        match daemon.images.collect_garbage(daemon).await {
            Ok(freed) => tracing::info!(app = %name, freed, "garbage collected"),
            Err(e) => tracing::warn!(app = %name, error = %e, "garbage collection failed"),
        }
        Ok(())
    }
}

/// The instance serving `app`, if any.
fn instance_of(daemon: &Daemon, app: &str) -> Option<Arc<InstanceRuntime>> {
    daemon
        .instances
        .find(|rt| rt.target.app.as_deref() == Some(app))
}

/// A `--from` directory must be an absolute path to an existing directory that neither is,
/// contains nor lies inside the Aegis home: a release would otherwise carry the daemon's
/// state, other workspaces and caches into every VM that runs it. Returns its canonical path.
fn check_source_dir(config: &Config, dir: &Path) -> Result<PathBuf, ApiError> {
    if !dir.is_absolute() {
        return Err(bad(format!(
            "--from {} must be an absolute path (the daemon resolves it, not your shell)",
            dir.display()
        )));
    }
    let canonical = match std::fs::canonicalize(dir) {
        Ok(c) if c.is_dir() => c,
        Ok(_) => {
            return Err(bad(format!(
                "--from {} is not a directory; give the directory to publish",
                dir.display()
            )))
        }
        Err(e) => {
            return Err(bad(format!(
                "cannot publish --from {}: {e}; give an existing directory",
                dir.display()
            )))
        }
    };
    if let Some(home) = crate::workspaces::host_path::overlapping_home(config, &canonical) {
        return Err(bad(format!(
            "cannot publish --from {}: it overlaps the Aegis home {} (it is the home, inside \
             it or contains it), whose state must never be part of a release; publish a \
             directory that holds only the app's files",
            dir.display(),
            home.display()
        )));
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_override_replaces_entrypoint_and_cmd() {
        let image = ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into()],
            env: vec!["PATH=/bin".into()],
            working_dir: "/srv".into(),
            ..Default::default()
        };
        let own = release_config(&image, &[]);
        assert_eq!(own.command(), ["/entry", "serve"]);
        let over = release_config(&image, &["httpd".into(), "-f".into()]);
        assert_eq!(over.command(), ["httpd", "-f"]);
        assert_eq!(over.env, image.env);
        assert_eq!(over.working_dir, "/srv");
    }

    #[test]
    fn instance_names_are_host_names() {
        assert_eq!(instance_name("my_app-2"), "my-app-2");
    }

    #[test]
    fn source_dirs_are_checked() {
        let home = tempfile::tempdir().unwrap();
        let config = Config::new(home.path().join("aegis"), "fake").unwrap();
        std::fs::create_dir_all(home.path().join("aegis/workspaces")).unwrap();
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            check_source_dir(&config, d.path()).unwrap(),
            std::fs::canonicalize(d.path()).unwrap()
        );
        let e = check_source_dir(&config, &d.path().join("missing")).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InvalidRequest);
        assert!(e.error.message.contains("missing"), "{e}");
        assert!(check_source_dir(&config, Path::new("rel/dir")).is_err());
        std::fs::write(d.path().join("f"), "").unwrap();
        assert!(check_source_dir(&config, &d.path().join("f"))
            .unwrap_err()
            .error
            .message
            .contains("not a directory"));
        // The home, a directory containing it, one inside it, and a symlink to it.
        let link = d.path().join("link");
        std::os::unix::fs::symlink(home.path(), &link).unwrap();
        for overlapping in [
            home.path().join("aegis"),
            home.path().to_path_buf(),
            home.path().join("aegis/workspaces"),
            link,
        ] {
            let e = check_source_dir(&config, &overlapping).unwrap_err();
            assert_eq!(e.error.code, ErrorCode::InvalidRequest);
            assert!(e.error.message.contains("overlaps the Aegis home"), "{e}");
        }
    }
}
