//! ServeTarget records (serve-mode instances).

use aegis_api::{CreateInstance, Endpoint};
use rusqlite::params;

use crate::{Registry, RegistryError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    pub id: String,
    pub name: String,
    pub target: CreateInstance,
    pub endpoints: Vec<Endpoint>,
    pub created_at: String,
}

impl Registry {
    pub fn insert_instance(&self, r: &InstanceRecord) -> Result<()> {
        let target = serde_json::to_string(&r.target).unwrap_or_default();
        let endpoints = serde_json::to_string(&r.endpoints).unwrap_or_default();
        self.conn().execute(
            "INSERT INTO instances (id, name, target, endpoints, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![r.id, r.name, target, endpoints, r.created_at],
        )?;
        Ok(())
    }

    /// Deletes the instance and the records of its execs, in one transaction. Returns
    /// whether the instance had a row.
    pub fn delete_instance(&self, id: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM execs WHERE instance = ?1", [id])?;
        let deleted = tx.execute("DELETE FROM instances WHERE id = ?1", [id])? > 0;
        tx.commit()?;
        Ok(deleted)
    }

    pub fn list_instances(&self) -> Result<Vec<InstanceRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, name, target, endpoints, created_at FROM instances ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get(4)?,
            ))
        })?;
        let mut out = vec![];
        for row in rows {
            let (id, name, target, endpoints, created_at) = row?;
            let corrupt = |e: serde_json::Error| RegistryError::Corrupt {
                id: id.clone(),
                detail: e.to_string(),
            };
            out.push(InstanceRecord {
                target: serde_json::from_str(&target).map_err(corrupt)?,
                endpoints: serde_json::from_str(&endpoints).map_err(corrupt)?,
                id,
                name,
                created_at,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_api::{PortProtocol, PortSpec};

    #[test]
    fn instance_records_roundtrip_and_names_are_unique() {
        let r = Registry::in_memory().unwrap();
        let rec = InstanceRecord {
            id: "inst-1".into(),
            name: "web".into(),
            target: CreateInstance {
                command: vec!["python3".into()],
                expose: vec![PortSpec {
                    guest_port: 80,
                    host_port: None,
                    protocol: PortProtocol::Http,
                }],
                ..Default::default()
            },
            endpoints: vec![Endpoint {
                guest_port: 80,
                host_port: 41000,
                protocol: PortProtocol::Http,
                url: "http://127.0.0.1:41000".into(),
            }],
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        r.insert_instance(&rec).unwrap();
        assert_eq!(r.list_instances().unwrap(), vec![rec.clone()]);
        let dup = InstanceRecord {
            id: "inst-2".into(),
            ..rec
        };
        assert!(r.insert_instance(&dup).is_err(), "names are unique");
        assert!(r.delete_instance("inst-1").unwrap());
        assert!(r.list_instances().unwrap().is_empty());
    }
}
