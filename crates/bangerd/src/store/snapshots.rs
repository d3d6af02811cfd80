//! Snapshot rows.

use banger_wire::api::{Backend, SnapshotInfo};
use rusqlite::{params, OptionalExtension, Row};

use super::{Store, StoreError};

/// One snapshot row. Its files are `<state>/snapshots/<id>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub id: String,
    pub name: String,
    /// The VM it was taken of.
    pub vm_name: String,
    pub image: String,
    /// The image's digest then: a clone needs the very same base disk.
    pub image_digest: String,
    pub backend: Backend,
    pub vcpu: u32,
    pub memory_mib: u32,
    pub disk_size_mib: u64,
    pub no_network: bool,
    /// The agent token the saved guest holds until a clone re-keys it.
    pub token: String,
    pub created_at: String,
    pub paused_ms: u64,
    pub warm: bool,
}

impl SnapshotRecord {
    pub fn info(&self, disk_bytes: u64) -> SnapshotInfo {
        SnapshotInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            vm: self.vm_name.clone(),
            image: self.image.clone(),
            backend: self.backend,
            vcpu: self.vcpu,
            memory_mib: self.memory_mib,
            disk_size_mib: self.disk_size_mib,
            no_network: self.no_network,
            created_at: self.created_at.clone(),
            disk_bytes,
            paused_ms: self.paused_ms,
            warm: self.warm,
        }
    }

    fn from_row(row: &Row<'_>) -> rusqlite::Result<SnapshotRecord> {
        let backend: String = row.get("backend")?;
        Ok(SnapshotRecord {
            id: row.get("id")?,
            name: row.get("name")?,
            vm_name: row.get("vm_name")?,
            image: row.get("image")?,
            image_digest: row.get("image_digest")?,
            backend: backend.parse().unwrap_or(Backend::Qemu),
            vcpu: row.get("vcpu")?,
            memory_mib: row.get("memory_mib")?,
            disk_size_mib: row.get::<_, i64>("disk_size_mib")? as u64,
            no_network: row.get("no_network")?,
            token: row.get("token")?,
            created_at: row.get("created_at")?,
            paused_ms: row.get::<_, i64>("paused_ms")? as u64,
            warm: row.get("warm")?,
        })
    }
}

impl Store {
    pub fn insert_snapshot(&self, s: &SnapshotRecord) -> Result<(), StoreError> {
        let res = self.conn().execute(
            "INSERT INTO snapshots (id, name, vm_name, image, image_digest, backend, vcpu,
                 memory_mib, disk_size_mib, no_network, token, created_at, paused_ms, warm)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                s.id,
                s.name,
                s.vm_name,
                s.image,
                s.image_digest,
                s.backend.as_str(),
                s.vcpu,
                s.memory_mib,
                s.disk_size_mib as i64,
                s.no_network,
                s.token,
                s.created_at,
                s.paused_ms as i64,
                s.warm,
            ],
        );
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::SnapshotNameTaken(s.name.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Finds a snapshot by name, or by id.
    pub fn get_snapshot(&self, name_or_id: &str) -> Result<Option<SnapshotRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT * FROM snapshots WHERE name = ?1 OR id = ?1
                 ORDER BY name = ?1 DESC LIMIT 1",
                [name_or_id],
                SnapshotRecord::from_row,
            )
            .optional()?)
    }

    pub fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT * FROM snapshots ORDER BY created_at, name")?;
        let rows = stmt.query_map([], SnapshotRecord::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn delete_snapshot(&self, id: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM snapshots WHERE id = ?1", [id])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(name: &str) -> SnapshotRecord {
        SnapshotRecord {
            id: format!("id-{name}"),
            name: name.into(),
            vm_name: "web".into(),
            image: "default".into(),
            image_digest: "sha256:abc".into(),
            backend: Backend::Qemu,
            vcpu: 2,
            memory_mib: 512,
            disk_size_mib: 1024,
            no_network: false,
            token: "t0k".into(),
            created_at: "2026-11-24T00:00:00Z".into(),
            paused_ms: 830,
            warm: false,
        }
    }

    #[test]
    fn snapshot_round_trips_by_name_and_id() {
        let store = Store::in_memory().unwrap();
        store.insert_snapshot(&snap("s1")).unwrap();

        let by_name = store.get_snapshot("s1").unwrap();
        let by_id = store.get_snapshot("id-s1").unwrap();

        assert_eq!(by_name, Some(snap("s1")));
        assert_eq!(by_id, Some(snap("s1")));
    }

    #[test]
    fn duplicate_snapshot_name_is_refused() {
        let store = Store::in_memory().unwrap();
        store.insert_snapshot(&snap("s1")).unwrap();
        let mut again = snap("s1");
        again.id = "other".into();

        let err = store.insert_snapshot(&again).unwrap_err();

        assert!(matches!(err, StoreError::SnapshotNameTaken(n) if n == "s1"));
    }

    #[test]
    fn deleted_snapshot_is_gone_from_the_list() {
        let store = Store::in_memory().unwrap();
        store.insert_snapshot(&snap("s1")).unwrap();
        store.insert_snapshot(&snap("s2")).unwrap();

        store.delete_snapshot("id-s1").unwrap();
        let names: Vec<String> = store
            .list_snapshots()
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();

        assert_eq!(names, ["s2"]);
    }
}
