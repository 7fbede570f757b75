//! Serve mode: instances (ServeTargets) with per-port router listeners, wake-on-connect and
//! idle timers. The router (crates/router) proxies; [`runtime`] owns each instance's VM and
//! its transitions; [`connector`] opens guest ports over the VM's session.

mod connector;
pub mod runtime;
mod upstream;

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aegis_api::{ApiError, CreateInstance, Endpoint, ErrorCode, Instance, PortProtocol};
use aegis_registry::InstanceRecord;
use aegis_router::{PortRoute, Protocol, Resolver, Target, WakeSettings};
use tokio::net::TcpListener;

use crate::daemon::Daemon;
use crate::ids;
use crate::sync::lock;
use crate::tasks::output::{self, OutputLog};
use crate::tasks::{validate_vm, HostLimits, VmRequest};
use runtime::InstanceRuntime;
use upstream::InstanceUpstream;

#[derive(Default)]
pub struct InstanceManager {
    instances: Mutex<HashMap<String, Arc<InstanceRuntime>>>,
    /// The one router upstream of each instance (by id). The router recognises an upstream
    /// by identity (it reuses a client's upstream connection while requests go to the same
    /// one), so the shared port must always hand out the same `Arc`.
    upstreams: Mutex<HashMap<String, Arc<dyn aegis_router::Upstream>>>,
}

fn bad(message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}

fn internal(message: String) -> ApiError {
    ApiError::new(ErrorCode::Internal, message)
}

fn router_protocol(p: PortProtocol) -> Protocol {
    match p {
        PortProtocol::Http => Protocol::Http,
        PortProtocol::Tcp => Protocol::Tcp,
        PortProtocol::Grpc => Protocol::Grpc,
        PortProtocol::Websocket => Protocol::Websocket,
    }
}

fn url(protocol: PortProtocol, port: u16) -> String {
    match protocol {
        PortProtocol::Http | PortProtocol::Grpc => format!("http://127.0.0.1:{port}"),
        PortProtocol::Websocket => format!("ws://127.0.0.1:{port}"),
        PortProtocol::Tcp => format!("tcp://127.0.0.1:{port}"),
    }
}

/// Checks a ServeTarget.
pub fn validate(req: &CreateInstance, limits: &HostLimits) -> Result<(), ApiError> {
    validate_vm(
        &VmRequest {
            command: &req.command,
            env: &req.env,
            workdir: req.workdir.as_deref(),
            memory_mib: req.memory_mib,
            vcpus: req.vcpus,
        },
        limits,
    )?;
    if req.expose.is_empty() {
        return Err(bad(
            "an instance must expose at least one port, e.g. `--expose 8000:http`".into(),
        ));
    }
    let mut guest = BTreeSet::new();
    let mut host = BTreeSet::new();
    for p in &req.expose {
        if p.guest_port == 0 {
            return Err(bad(
                "guest port 0 is not a port; name the port the app listens on".into(),
            ));
        }
        if !guest.insert(p.guest_port) {
            return Err(bad(format!("guest port {} is exposed twice", p.guest_port)));
        }
        if let Some(h) = p.host_port.filter(|h| *h != 0) {
            if !host.insert(h) {
                return Err(bad(format!("host port {h} is used twice")));
            }
        }
    }
    if let Some(name) = &req.name {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-');
        if !ok {
            return Err(bad(format!(
                "invalid instance name '{name}': use 1-63 lowercase letters, digits and '-' \
                 (it becomes a host name on the router)"
            )));
        }
    }
    req.check_durations().map_err(bad)
}

impl InstanceManager {
    pub fn get(&self, key: &str) -> Result<Arc<InstanceRuntime>, ApiError> {
        let all = lock(&self.instances);
        all.get(key)
            .or_else(|| all.values().find(|i| i.name == key))
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFound,
                    format!("no instance '{key}'; list instances with `aegis instance ls`"),
                )
            })
    }

    /// The first instance for which `pred` holds.
    pub fn find(&self, pred: impl Fn(&InstanceRuntime) -> bool) -> Option<Arc<InstanceRuntime>> {
        lock(&self.instances).values().find(|rt| pred(rt)).cloned()
    }

    /// The router upstream of instance `key` (id or name).
    fn upstream(
        &self,
        key: &str,
    ) -> Option<(Arc<InstanceRuntime>, Arc<dyn aegis_router::Upstream>)> {
        let rt = self.get(key).ok()?;
        let upstream = lock(&self.upstreams).get(&rt.id).cloned()?;
        Some((rt, upstream))
    }

    pub fn list(&self) -> Vec<Instance> {
        let mut v: Vec<_> = lock(&self.instances).values().map(|i| i.view()).collect();
        v.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        v
    }

    /// Creates an instance: binds its ports, records it, and leaves it terminated; the first
    /// connection wakes it (scale to zero from the start).
    pub async fn create(
        &self,
        daemon: &Arc<Daemon>,
        req: CreateInstance,
    ) -> Result<Instance, ApiError> {
        if daemon.shutdown.is_cancelled() {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "aegisd is shutting down",
            ));
        }
        let mut req = req;
        // An app's instance boots from its release's layers (checked when it is served);
        // any other takes its image's configuration, once, here.
        if req.app.is_none() {
            let image = req
                .image
                .clone()
                .unwrap_or_else(|| aegis_api::DEFAULT_IMAGE.to_string());
            let root = crate::images::resolve_root(daemon, &image).await?;
            if let Some(config) = &root.config {
                apply_image_config(&mut req, config);
            }
        }
        validate(&req, &HostLimits::probe())?;
        let workspace = crate::workspaces::check_request(daemon, req.workspace.as_deref())?;
        req.workspace = workspace.as_ref().map(|w| w.as_request());
        let id = ids::new_id("inst");
        let name = req.name.clone().unwrap_or_else(|| id.clone());
        if self.get(&name).is_ok() {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("an instance named '{name}' already exists; pick another --name"),
            ));
        }
        // Held for the instance's whole life: it can wake at any time.
        if let Some(ws) = &workspace {
            daemon.workspaces.acquire(daemon, ws, &id)?;
        }
        let created = self.bind_and_start(daemon, id.clone(), name, req).await;
        if created.is_err() {
            if let Some(ws) = &workspace {
                daemon.workspaces.release(Some(&ws.as_request()), &id);
            }
        }
        created
    }

    /// The rest of [`Self::create`]: host ports, record, runtime.
    async fn bind_and_start(
        &self,
        daemon: &Arc<Daemon>,
        id: String,
        name: String,
        req: CreateInstance,
    ) -> Result<Instance, ApiError> {
        let mut listeners = vec![];
        let mut endpoints = vec![];
        for p in &req.expose {
            let want = p.host_port.unwrap_or(0);
            let l = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, want)))
                .await
                .map_err(|e| {
                    ApiError::new(
                        ErrorCode::Conflict,
                        format!("cannot listen on 127.0.0.1:{want} for guest port {}: {e}; choose another host port", p.guest_port),
                    )
                })?;
            let host_port = l.local_addr().map(|a| a.port()).unwrap_or(want);
            endpoints.push(Endpoint {
                guest_port: p.guest_port,
                host_port,
                protocol: p.protocol,
                url: url(p.protocol, host_port),
            });
            listeners.push(l);
        }
        let record = InstanceRecord {
            id: id.clone(),
            name,
            target: req,
            endpoints,
            created_at: ids::now(),
        };
        daemon.registry.insert_instance(&record).map_err(|e| {
            ApiError::new(
                ErrorCode::Conflict,
                format!("cannot record the instance: {e}"),
            )
        })?;
        let rt = self.start(daemon, record, listeners)?;
        Ok(rt.view())
    }

    /// Brings a recorded instance to life: listeners, idle loop. Terminated until used.
    fn start(
        &self,
        daemon: &Arc<Daemon>,
        record: InstanceRecord,
        listeners: Vec<TcpListener>,
    ) -> Result<Arc<InstanceRuntime>, ApiError> {
        let dir = daemon.config.home.join("instances").join(&record.id);
        let log = OutputLog::create(&dir)
            .map_err(|e| internal(format!("cannot create {}: {e}", dir.display())))?;
        let rt = InstanceRuntime::new(
            daemon,
            record.id.clone(),
            record.name.clone(),
            record.target.clone(),
            record.created_at.clone(),
            record.endpoints.clone(),
            Arc::new(log),
        );
        let wake = WakeSettings {
            deadline: rt.wake_timeout(),
            loading_page: record.target.loading_page.unwrap_or(true),
        };
        let upstream: Arc<dyn aegis_router::Upstream> = Arc::new(InstanceUpstream(rt.clone()));
        for (listener, p) in listeners.into_iter().zip(&record.target.expose) {
            let route = PortRoute {
                guest_port: p.guest_port,
                protocol: router_protocol(p.protocol),
                wake,
            };
            let handle = tokio::spawn(aegis_router::serve_port_on(
                daemon.router_workers.clone(),
                listener,
                route,
                upstream.clone(),
                rt.shutdown.clone(),
            ));
            lock(&rt.listeners).push(handle);
        }
        tokio::spawn(rt.clone().idle_loop());
        lock(&self.upstreams).insert(record.id.clone(), upstream);
        lock(&self.instances).insert(record.id.clone(), rt.clone());
        Ok(rt)
    }

    /// Re-creates recorded instances after a daemon restart, on the same host ports.
    pub async fn reload(&self, daemon: &Arc<Daemon>) {
        let records = match daemon.registry.list_instances() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot load instances");
                return;
            }
        };
        for record in records {
            // The instance exists (even if it cannot be served now): it holds its workspace.
            if let Some(ws) = record.target.workspace.as_deref() {
                if !ws.starts_with('/') {
                    daemon.workspaces.restore_hold(ws, &record.id);
                }
            }
            let mut listeners = vec![];
            for e in &record.endpoints {
                match TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, e.host_port))).await
                {
                    Ok(l) => listeners.push(l),
                    Err(err) => {
                        tracing::error!(instance = %record.id, port = e.host_port, error = %err, "cannot re-bind port; instance not served");
                        break;
                    }
                }
            }
            if listeners.len() != record.endpoints.len() {
                continue;
            }
            let id = record.id.clone();
            if let Err(e) = self.start(daemon, record, listeners) {
                tracing::error!(instance = %id, error = %e, "cannot restart instance");
            }
        }
    }

    pub async fn pause(&self, key: &str) -> Result<Instance, ApiError> {
        let rt = self.get(key)?;
        rt.pause()
            .await
            .map_err(|e| ApiError::new(ErrorCode::Conflict, e))?;
        Ok(rt.view())
    }

    pub async fn resume(&self, key: &str) -> Result<Instance, ApiError> {
        let rt = self.get(key)?;
        rt.ensure_ready().await.map_err(|e| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!("cannot wake instance {key}: {}", error_chain(&e)),
            )
        })?;
        Ok(rt.view())
    }

    pub async fn stop(&self, key: &str) -> Result<Instance, ApiError> {
        let rt = self.get(key)?;
        rt.terminate().await;
        Ok(rt.view())
    }

    pub async fn delete(&self, daemon: &Daemon, key: &str) -> Result<(), ApiError> {
        let rt = self.get(key)?;
        lock(&self.instances).remove(&rt.id);
        lock(&self.upstreams).remove(&rt.id);
        rt.shutdown.cancel();
        // Release the host ports before answering, so they can be reused at once.
        let listeners: Vec<_> = lock(&rt.listeners).drain(..).collect();
        let grace = aegis_router::SHUTDOWN_GRACE + Duration::from_secs(1);
        let _ = tokio::time::timeout(grace, futures::future::join_all(listeners)).await;
        rt.terminate().await;
        rt.forget();
        rt.log.finish();
        daemon
            .registry
            .delete_instance(&rt.id)
            .map_err(|e| internal(e.to_string()))?;
        // Its VM is gone: the workspace is free for others.
        daemon
            .workspaces
            .release(rt.target.workspace.as_deref(), &rt.id);
        let _ = std::fs::remove_dir_all(daemon.config.home.join("instances").join(&rt.id));
        Ok(())
    }

    /// The log feed of the served process (never ends while the instance exists).
    pub fn logs(
        &self,
        daemon: &Daemon,
        key: &str,
        follow: bool,
        offsets: (u64, u64),
    ) -> Result<tokio::sync::mpsc::Receiver<bytes::Bytes>, ApiError> {
        let rt = self.get(key)?;
        let dir = daemon.config.home.join("instances").join(&rt.id);
        // The feed ends when the instance is deleted (its log finishes) or the daemon stops.
        Ok(output::feed(
            dir,
            Some(rt.log.subscribe()),
            follow,
            offsets,
            Box::new(|| None),
            daemon.shutdown.clone(),
        ))
    }

    /// Stops every VM (daemon shutdown). Targets stay recorded and come back on restart.
    pub async fn shutdown(&self, grace: Duration) {
        lock(&self.upstreams).clear();
        let all: Vec<_> = lock(&self.instances).drain().map(|(_, v)| v).collect();
        let stops = all.into_iter().map(|rt| async move {
            rt.shutdown.cancel();
            rt.terminate().await;
        });
        if tokio::time::timeout(grace, futures::future::join_all(stops))
            .await
            .is_err()
        {
            tracing::error!("some instances did not stop in time");
        }
    }
}

/// `WakeError`'s message with its causes.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Host-name routing on the shared HTTP port: `<name>` -> the instance's first HTTP-family port.
pub struct NameResolver(pub std::sync::Weak<Daemon>);

impl Resolver for NameResolver {
    fn resolve(&self, name: &str) -> Option<Target> {
        let daemon = self.0.upgrade()?;
        let (rt, upstream) = daemon.instances.upstream(name)?;
        let port = rt
            .target
            .expose
            .iter()
            .find(|p| p.protocol != PortProtocol::Tcp)?;
        let wake = WakeSettings {
            deadline: rt.wake_timeout(),
            loading_page: rt.target.loading_page.unwrap_or(true),
        };
        let route = PortRoute {
            guest_port: port.guest_port,
            protocol: router_protocol(port.protocol),
            wake,
        };
        Some(Target::new(upstream, route))
    }
}

/// Applies an OCI image's configuration to an instance request, as `docker run` would: its
/// Entrypoint/Cmd, Env, WorkingDir and User under what the request says, and its
/// ExposedPorts (as HTTP) when the request exposes nothing.
fn apply_image_config(req: &mut CreateInstance, config: &aegis_oci::ImageConfig) {
    crate::images::apply_config_to(
        config,
        &mut req.command,
        &mut req.env,
        &mut req.workdir,
        &mut req.user,
    );
    if req.expose.is_empty() {
        req.expose = crate::images::exposed_ports(config);
    }
}
