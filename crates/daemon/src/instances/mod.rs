//! Serve mode: instances (ServeTargets) with per-port router listeners, wake-on-connect and
//! idle timers. The router (crates/router) proxies; this module keeps the set of instances
//! and their ports. Each instance is an [`runtime::InstanceRuntime`]; its transitions are in
//! [`lifecycle`], a wake's boot or restore in [`wake`], the memory snapshot in
//! [`snapshot_cache`], the served process's output in [`logs`], the idle timers in [`idle`];
//! [`connector`] opens guest ports over the VM's session, [`upstream`] is the router's view;
//! [`exec`] runs commands next to the server, [`exec_record`] keeps them in the registry.

mod activity_holders;
mod connector;
mod error;
pub mod exec;
pub mod exec_record;
pub mod files;
mod idle;
mod leases;
mod lifecycle;
mod logs;
mod port_upstream;
pub mod runtime;
mod snapshot_cache;
mod target;
mod upstream;
mod wake;
mod watch;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use aegis_api::{ApiError, CreateInstance, Endpoint, ErrorCode, Instance, PortProtocol};
use aegis_registry::InstanceRecord;
use aegis_router::{PortRoute, Resolver, Target, WakeSettings};
use tokio::net::TcpListener;

use crate::api::internal;
use crate::daemon::Daemon;
use crate::ids;
use crate::tasks::output::{self, OutputLog};
use crate::vm_request::{AsVmRequest, HostLimits};
pub use activity_holders::{ActivityHolders, HolderGuard};
pub use aegis_api::error_chain;
use error::{LifecycleError, PortLost};
pub use error::{PauseRefused, WakeFailure};
use port_upstream::PortUpstream;
use runtime::InstanceRuntime;
pub use target::validate;
use target::{router_protocol, url};
use upstream::InstanceUpstream;

#[derive(Default)]
pub struct InstanceManager {
    instances: Mutex<HashMap<String, Arc<InstanceRuntime>>>,
    /// The one router upstream of each instance (by id). The router recognises an upstream
    /// by identity (it reuses a client's upstream connection while requests go to the same
    /// one), so the shared port must always hand out the same `Arc`.
    upstreams: Mutex<HashMap<String, Arc<dyn aegis_router::Upstream>>>,
}

impl InstanceManager {
    pub fn get(&self, key: &str) -> Result<Arc<InstanceRuntime>, ApiError> {
        let all = self.instances.lock();
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
        self.instances.lock().values().find(|rt| pred(rt)).cloned()
    }

    /// How many instances `pred` holds for.
    pub fn count(&self, pred: impl Fn(&InstanceRuntime) -> bool) -> usize {
        self.instances.lock().values().filter(|rt| pred(rt)).count()
    }

    /// The router upstream of instance `key` (id or name).
    fn upstream(
        &self,
        key: &str,
    ) -> Option<(Arc<InstanceRuntime>, Arc<dyn aegis_router::Upstream>)> {
        let rt = self.get(key).ok()?;
        let upstream = self.upstreams.lock().get(&rt.id).cloned()?;
        Some((rt, upstream))
    }

    pub fn list(&self) -> Vec<Instance> {
        let mut v: Vec<_> = self.instances.lock().values().map(|i| i.view()).collect();
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
        // What no image configuration changes is checked before the image is looked up: a
        // request that can never run gets its 400, not a 503 asking to build the image.
        let limits = HostLimits::probe();
        crate::vm_request::validate_resources(req.memory_mib, req.vcpus, &limits)?;
        req.check_durations().map_err(crate::api::bad)?;
        // An app's instance boots from its release's layers (checked when it is served);
        // any other takes its image's configuration, once, here.
        if req.app.is_none() {
            let image = req
                .image
                .clone()
                .unwrap_or_else(|| aegis_api::DEFAULT_IMAGE.to_string());
            let root = crate::images::resolve_root(daemon, &image).await?;
            if let Some(config) = &root.config {
                req.apply_image_config(config);
                // As `docker run -P`: the image's ExposedPorts (as HTTP) when the request
                // exposes nothing.
                if req.expose.is_empty() {
                    req.expose = crate::images::exposed_ports(config);
                }
            }
        }
        crate::quotas::check_instances(daemon)?;
        crate::quotas::check_exposed_ports(daemon, req.expose.len())?;
        validate(&req, &limits)?;
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
        let rt = InstanceRuntime::new(daemon, &record, self.open_log(daemon, &record.id)?, None);
        let wake = WakeSettings {
            deadline: rt.wake_timeout(),
            loading_page: record.target.loading_page.unwrap_or(true),
        };
        let instance: Arc<dyn aegis_router::Upstream> = Arc::new(InstanceUpstream(rt.clone()));
        let on_port = |p: &aegis_api::PortSpec| {
            PortUpstream::for_port(instance.clone(), rt.clone(), p.guest_port, p.protocol)
        };
        // The shared port routes to the first HTTP-family port (see `NameResolver`).
        let upstream = match record
            .target
            .expose
            .iter()
            .find(|p| p.protocol != PortProtocol::Tcp)
        {
            Some(p) => on_port(p),
            None => instance.clone(),
        };
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
                on_port(p),
                rt.shutdown.clone(),
            ));
            rt.listeners.lock().push(handle);
        }
        tokio::spawn(rt.clone().idle_loop());
        self.upstreams.lock().insert(record.id.clone(), upstream);
        self.instances.lock().insert(record.id.clone(), rt.clone());
        Ok(rt)
    }

    fn open_log(&self, daemon: &Daemon, id: &str) -> Result<Arc<OutputLog>, ApiError> {
        let dir = daemon.config.home.instance_dir(id);
        let limits = &daemon.config.limits;
        let bound = output::Bound::Rotate {
            file_bytes: limits.instance_log_bytes,
            keep: limits.instance_log_rotated_files,
        };
        let log = OutputLog::create(&dir, bound)
            .map_err(|e| internal(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Arc::new(log))
    }

    /// Re-creates recorded instances after a daemon restart, on the same host ports. One
    /// whose port cannot be bound again stays listed in the `error` state (it keeps its name
    /// and workspace until removed) with a message that says what to do.
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
            let id = record.id.clone();
            let started = match bind_recorded(&record).await {
                Ok(listeners) => self.start(daemon, record, listeners),
                Err(lost) => {
                    tracing::error!(instance = %id, error = %lost, "instance cannot be served");
                    self.start_unservable(daemon, record, lost.to_string())
                }
            };
            if let Err(e) = started {
                tracing::error!(instance = %id, error = %e, "cannot restart instance");
            }
        }
    }

    /// Lists an instance that cannot be served: no listeners, no router name, no idle loop.
    fn start_unservable(
        &self,
        daemon: &Arc<Daemon>,
        record: InstanceRecord,
        why: String,
    ) -> Result<Arc<InstanceRuntime>, ApiError> {
        let log = self.open_log(daemon, &record.id)?;
        let rt = InstanceRuntime::new(daemon, &record, log, Some(why));
        self.instances.lock().insert(record.id.clone(), rt.clone());
        Ok(rt)
    }

    pub async fn pause(&self, key: &str) -> Result<Instance, ApiError> {
        let rt = self.get(key)?;
        rt.pause().await.map_err(LifecycleError::Pause)?;
        Ok(rt.view())
    }

    pub async fn resume(&self, key: &str) -> Result<Instance, ApiError> {
        let rt = self.get(key)?;
        rt.ensure_ready()
            .await
            .map_err(|error| LifecycleError::Wake { key, error })?;
        Ok(rt.view())
    }

    pub async fn stop(&self, key: &str) -> Result<Instance, ApiError> {
        let rt = self.get(key)?;
        rt.terminate().await;
        Ok(rt.view())
    }

    pub async fn delete(&self, daemon: &Daemon, key: &str) -> Result<(), ApiError> {
        let rt = self.get(key)?;
        self.instances.lock().remove(&rt.id);
        self.upstreams.lock().remove(&rt.id);
        rt.shutdown.cancel();
        // Release the host ports before answering, so they can be reused at once.
        let listeners: Vec<_> = rt.listeners.lock().drain(..).collect();
        let grace = aegis_router::SHUTDOWN_GRACE + Duration::from_secs(1);
        let _ = tokio::time::timeout(grace, futures::future::join_all(listeners)).await;
        rt.terminate().await;
        rt.forget();
        rt.log.finish();
        daemon
            .registry
            .delete_instance(&rt.id)
            .map_err(|e| internal(format!("cannot delete instance {}: {e}", rt.id)))?;
        // Its VM is gone: the workspace is free for others.
        daemon
            .workspaces
            .release(rt.target.workspace.as_deref(), &rt.id);
        let _ = std::fs::remove_dir_all(daemon.config.home.instance_dir(&rt.id));
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
        let dir = daemon.config.home.instance_dir(&rt.id);
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
        self.upstreams.lock().clear();
        let all: Vec<_> = self.instances.lock().drain().map(|(_, v)| v).collect();
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

/// Binds the recorded host ports of an instance again.
async fn bind_recorded(record: &InstanceRecord) -> Result<Vec<TcpListener>, PortLost> {
    let mut listeners = vec![];
    for e in &record.endpoints {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, e.host_port));
        let l = TcpListener::bind(addr).await.map_err(|cause| PortLost {
            addr,
            guest_port: e.guest_port,
            name: record.name.clone(),
            cause,
        })?;
        listeners.push(l);
    }
    Ok(listeners)
}
