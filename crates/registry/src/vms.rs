//! Records of live VMM processes, for reconciliation after a daemon crash.

use rusqlite::params;

use crate::{Registry, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRecord {
    pub id: String,
    pub owner: String,
    pub backend: String,
    pub pid: Option<u32>,
    pub run_dir: String,
    pub created_at: String,
}

impl Registry {
    pub fn insert_vm(&self, vm: &VmRecord) -> Result<()> {
        self.conn().execute(
            "INSERT INTO vms (id, owner, backend, pid, run_dir, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                vm.id,
                vm.owner,
                vm.backend,
                vm.pid,
                vm.run_dir,
                vm.created_at
            ],
        )?;
        Ok(())
    }

    pub fn delete_vm(&self, id: &str) -> Result<()> {
        self.conn().execute("DELETE FROM vms WHERE id = ?1", [id])?;
        Ok(())
    }

    pub fn list_vms(&self) -> Result<Vec<VmRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, owner, backend, pid, run_dir, created_at FROM vms ORDER BY created_at",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(VmRecord {
                id: r.get(0)?,
                owner: r.get(1)?,
                backend: r.get(2)?,
                pid: r.get(3)?,
                run_dir: r.get(4)?,
                created_at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_records_roundtrip() {
        let r = Registry::in_memory().unwrap();
        let vm = VmRecord {
            id: "vm-1".into(),
            owner: "task-1".into(),
            backend: "qemu".into(),
            pid: Some(1234),
            run_dir: "/tmp/x".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        r.insert_vm(&vm).unwrap();
        assert_eq!(r.list_vms().unwrap(), vec![vm]);
        r.delete_vm("vm-1").unwrap();
        assert!(r.list_vms().unwrap().is_empty());
    }
}
