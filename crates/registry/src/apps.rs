//! Apps and their immutable, numbered releases.
//!
//! There is no update path for a release: it is written once, in one transaction with its
//! layers and the next free number, and only ever deleted together with its app. The schema
//! refuses `UPDATE`s of release rows as well.

use std::collections::HashSet;

use aegis_api::{PortSpec, Release, ReleaseConfig, ReleaseLayer};
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use crate::{Registry, RegistryError, Result};

/// An app as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRecord {
    pub name: String,
    /// Canonical OCI image reference.
    pub image: String,
    pub expose: Vec<PortSpec>,
    /// Command override; empty: the image's.
    pub command: Vec<String>,
    pub created_at: String,
}

/// What a new release is made of (its number is assigned when it is recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRelease {
    pub label: Option<String>,
    pub image: String,
    pub manifest_digest: String,
    pub layers: Vec<ReleaseLayer>,
    pub config: ReleaseConfig,
    pub created_at: String,
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn to_json<T: serde::Serialize + ?Sized>(id: &str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| RegistryError::Corrupt {
        id: id.to_string(),
        detail: format!("cannot encode: {e}"),
    })
}

fn from_json<T: serde::de::DeserializeOwned>(id: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| RegistryError::Corrupt {
        id: id.to_string(),
        detail: e.to_string(),
    })
}

type AppRow = (String, String, String, String, String);

fn app_from_row(row: AppRow) -> Result<AppRecord> {
    let (name, image, expose, command, created_at) = row;
    Ok(AppRecord {
        expose: from_json(&name, &expose)?,
        command: from_json(&name, &command)?,
        name,
        image,
        created_at,
    })
}

const APP_COLUMNS: &str = "name, image, expose, command, created_at";

impl Registry {
    /// Records a new app. `Ok(false)`: an app of that name exists already.
    pub fn insert_app(&self, app: &AppRecord) -> Result<bool> {
        let expose = to_json(&app.name, &app.expose)?;
        let command = to_json(&app.name, &app.command)?;
        match self.conn().execute(
            "INSERT INTO apps (name, image, expose, command, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![app.name, app.image, expose, command, app.created_at],
        ) {
            Ok(_) => Ok(true),
            Err(e) if is_constraint(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub fn get_app(&self, name: &str) -> Result<Option<AppRecord>> {
        let row: Option<AppRow> = self
            .conn()
            .query_row(
                &format!("SELECT {APP_COLUMNS} FROM apps WHERE name = ?1"),
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        row.map(app_from_row).transpose()
    }

    /// Every app, by name.
    pub fn list_apps(&self) -> Result<Vec<AppRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {APP_COLUMNS} FROM apps ORDER BY name"))?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
        let mut out = vec![];
        for row in rows {
            out.push(app_from_row(row?)?);
        }
        Ok(out)
    }

    /// Deletes an app and all its releases in one transaction. `Ok(false)`: no such app.
    pub fn delete_app(&self, name: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM release_layers WHERE app = ?1", [name])?;
        tx.execute("DELETE FROM releases WHERE app = ?1", [name])?;
        let n = tx.execute("DELETE FROM apps WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Records the app's next release (number = newest + 1) with its layers, in one
    /// transaction. `Ok(None)`: the app does not exist (any more).
    pub fn publish_release(&self, app: &str, new: &NewRelease) -> Result<Option<Release>> {
        let config = to_json(app, &new.config)?;
        let mut conn = self.conn();
        // IMMEDIATE: the number is read and used under the write lock.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: bool = tx
            .query_row("SELECT 1 FROM apps WHERE name = ?1", [app], |_| Ok(()))
            .optional()?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let last: i64 = tx.query_row(
            "SELECT COALESCE(MAX(number), 0) FROM releases WHERE app = ?1",
            [app],
            |r| r.get(0),
        )?;
        let number = u32::try_from(last + 1).map_err(|_| RegistryError::Corrupt {
            id: app.to_string(),
            detail: format!("release number {last} is out of range"),
        })?;
        tx.execute(
            "INSERT INTO releases (app, number, label, image, manifest_digest, config, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                app,
                number,
                new.label,
                new.image,
                new.manifest_digest,
                config,
                new.created_at
            ],
        )?;
        for (position, layer) in new.layers.iter().enumerate() {
            tx.execute(
                "INSERT INTO release_layers (app, number, position, digest, media_type, size)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    app,
                    number,
                    position as i64,
                    layer.digest,
                    layer.media_type,
                    i64::try_from(layer.size).unwrap_or(i64::MAX)
                ],
            )?;
        }
        tx.commit()?;
        Ok(Some(Release {
            app: app.to_string(),
            number,
            label: new.label.clone(),
            image: new.image.clone(),
            manifest_digest: new.manifest_digest.clone(),
            layers: new.layers.clone(),
            config: new.config.clone(),
            created_at: new.created_at.clone(),
        }))
    }

    /// The app's releases, oldest first.
    pub fn releases(&self, app: &str) -> Result<Vec<Release>> {
        self.query_releases(app, None)
    }

    pub fn release(&self, app: &str, number: u32) -> Result<Option<Release>> {
        Ok(self.query_releases(app, Some(number))?.pop())
    }

    /// The newest release of the app.
    pub fn latest_release(&self, app: &str) -> Result<Option<Release>> {
        Ok(self.releases(app)?.pop())
    }

    fn query_releases(&self, app: &str, number: Option<u32>) -> Result<Vec<Release>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT number, label, image, manifest_digest, config, created_at FROM releases
             WHERE app = ?1 AND (?2 IS NULL OR number = ?2) ORDER BY number",
        )?;
        let rows = stmt.query_map(params![app, number], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?;
        let mut out = vec![];
        for row in rows {
            let (number, label, image, manifest_digest, config, created_at) = row?;
            let id = format!("{app} release {number}");
            out.push(Release {
                app: app.to_string(),
                number,
                label,
                image,
                manifest_digest,
                layers: vec![],
                config: from_json(&id, &config)?,
                created_at,
            });
        }
        let mut layers = conn.prepare(
            "SELECT digest, media_type, size FROM release_layers
             WHERE app = ?1 AND number = ?2 ORDER BY position",
        )?;
        for release in &mut out {
            let rows = layers.query_map(params![app, release.number], |r| {
                Ok(ReleaseLayer {
                    digest: r.get(0)?,
                    media_type: r.get(1)?,
                    size: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                })
            })?;
            release.layers = rows.collect::<rusqlite::Result<_>>()?;
        }
        Ok(out)
    }

    /// Every layer digest referenced by any release: the image store's garbage collector must
    /// keep these blobs.
    pub fn release_blob_digests(&self) -> Result<HashSet<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT DISTINCT digest FROM release_layers")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Switches a recorded instance to another release of its app (the `release` field of
    /// its ServeTarget). `Ok(false)`: no such instance.
    pub fn set_instance_release(&self, id: &str, release: u32) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let target: Option<String> = tx
            .query_row("SELECT target FROM instances WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(target) = target else {
            return Ok(false);
        };
        let mut target: aegis_api::CreateInstance = from_json(id, &target)?;
        target.release = Some(release);
        let target = to_json(id, &target)?;
        tx.execute(
            "UPDATE instances SET target = ?2 WHERE id = ?1",
            params![id, target],
        )?;
        tx.commit()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_api::{CreateInstance, PortProtocol};

    fn app(name: &str) -> AppRecord {
        AppRecord {
            name: name.into(),
            image: "localhost:5000/web:1".into(),
            expose: vec![PortSpec {
                guest_port: 8080,
                host_port: None,
                protocol: PortProtocol::Http,
            }],
            command: vec!["httpd".into(), "-f".into()],
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn layer(n: u8) -> ReleaseLayer {
        ReleaseLayer {
            digest: format!("sha256:{}", format!("{n:02x}").repeat(32)),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            size: 100 + n as u64,
        }
    }

    fn new_release(label: &str, layers: Vec<ReleaseLayer>) -> NewRelease {
        NewRelease {
            label: Some(label.into()),
            image: "localhost:5000/web:1".into(),
            manifest_digest: format!("sha256:{}", "ab".repeat(32)),
            layers,
            config: ReleaseConfig {
                cmd: vec!["httpd".into()],
                env: vec!["PATH=/bin".into()],
                exposed_ports: vec!["8080/tcp".into()],
                ..Default::default()
            },
            created_at: "2026-01-01T00:00:01Z".into(),
        }
    }

    #[test]
    fn apps_roundtrip_and_names_are_unique() {
        let r = Registry::in_memory().unwrap();
        assert!(r.insert_app(&app("web")).unwrap());
        assert!(!r.insert_app(&app("web")).unwrap(), "duplicate refused");
        assert!(r.insert_app(&app("api")).unwrap());
        assert_eq!(r.get_app("web").unwrap(), Some(app("web")));
        assert_eq!(r.get_app("nope").unwrap(), None);
        let names: Vec<_> = r.list_apps().unwrap().into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["api", "web"]);
    }

    #[test]
    fn releases_are_numbered_ordered_and_kept_whole() {
        let r = Registry::in_memory().unwrap();
        r.insert_app(&app("web")).unwrap();
        r.insert_app(&app("api")).unwrap();
        assert_eq!(r.latest_release("web").unwrap(), None);
        let one = r
            .publish_release("web", &new_release("v1", vec![layer(1), layer(2)]))
            .unwrap()
            .unwrap();
        let two = r
            .publish_release("web", &new_release("v2", vec![layer(1), layer(3)]))
            .unwrap()
            .unwrap();
        let other = r
            .publish_release("api", &new_release("x", vec![layer(4)]))
            .unwrap()
            .unwrap();
        assert_eq!((one.number, two.number, other.number), (1, 2, 1));
        assert_eq!(r.releases("web").unwrap(), vec![one.clone(), two.clone()]);
        assert_eq!(r.release("web", 1).unwrap(), Some(one.clone()));
        assert_eq!(r.release("web", 3).unwrap(), None);
        assert_eq!(r.latest_release("web").unwrap(), Some(two.clone()));
        assert_eq!(two.layers, vec![layer(1), layer(3)], "order kept");
        assert!(r
            .publish_release("gone", &new_release("x", vec![]))
            .unwrap()
            .is_none());

        let digests = r.release_blob_digests().unwrap();
        let want: HashSet<String> = [1, 2, 3, 4].map(|n| layer(n).digest).into();
        assert_eq!(digests, want);

        assert!(r.delete_app("web").unwrap());
        assert!(!r.delete_app("web").unwrap());
        assert!(r.releases("web").unwrap().is_empty());
        assert_eq!(
            r.release_blob_digests().unwrap(),
            [layer(4).digest].into(),
            "deleted releases no longer pin their blobs"
        );
        // A new app of the same name starts at release 1 again.
        r.insert_app(&app("web")).unwrap();
        let again = r
            .publish_release("web", &new_release("v1", vec![]))
            .unwrap()
            .unwrap();
        assert_eq!(again.number, 1);
    }

    #[test]
    fn releases_are_immutable() {
        let r = Registry::in_memory().unwrap();
        r.insert_app(&app("web")).unwrap();
        r.publish_release("web", &new_release("v1", vec![layer(1)]))
            .unwrap();
        let conn = r.conn();
        for sql in [
            "UPDATE releases SET label = 'changed'",
            "UPDATE release_layers SET digest = 'sha256:00'",
        ] {
            let e = conn.execute(sql, []).unwrap_err();
            assert!(e.to_string().contains("releases are immutable"), "{e}");
        }
        drop(conn);
        assert_eq!(
            r.release("web", 1).unwrap().unwrap().label.as_deref(),
            Some("v1")
        );
    }

    #[test]
    fn instance_release_switch_is_recorded() {
        let r = Registry::in_memory().unwrap();
        r.insert_instance(&crate::InstanceRecord {
            id: "inst-1".into(),
            name: "web".into(),
            target: CreateInstance {
                command: vec!["httpd".into()],
                app: Some("web".into()),
                release: Some(1),
                ..Default::default()
            },
            endpoints: vec![],
            created_at: "2026-01-01T00:00:00Z".into(),
        })
        .unwrap();
        assert!(r.set_instance_release("inst-1", 2).unwrap());
        assert!(!r.set_instance_release("inst-9", 2).unwrap());
        let inst = r.list_instances().unwrap().pop().unwrap();
        assert_eq!(inst.target.release, Some(2));
        assert_eq!(inst.target.app.as_deref(), Some("web"));
    }
}
