//! The daemon's SQLite store: VMs and IP leases. WAL mode, embedded migrations.
//!
//! Writes commit before the daemon answers, so a SIGKILLed daemon loses nothing it
//! reported. All access goes through one connection behind a mutex; queries are tiny.

mod migrations;
mod pool;
mod snapshots;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use banger_wire::api::{Backend, BootTimings, NetPolicy, VmInfo, VmState};
use banger_wire::user::GuestUser;
use rusqlite::{params, Connection, OptionalExtension, Row};

pub use migrations::STEPS as MIGRATIONS;
pub use pool::PoolEntry;
pub use snapshots::SnapshotRecord;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open store {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot migrate store {path}")]
    Migrate {
        path: PathBuf,
        #[source]
        source: rusqlite_migration::Error,
    },
    #[error("a vm named {0:?} already exists")]
    NameTaken(String),
    #[error("a snapshot named {0:?} already exists")]
    SnapshotNameTaken(String),
    #[error("store query failed")]
    Sql(#[from] rusqlite::Error),
}

/// One VM row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRecord {
    pub id: String,
    pub name: String,
    pub image: String,
    pub backend: Backend,
    pub vcpu: u32,
    pub memory_mib: u32,
    pub disk_size_mib: u64,
    pub state: VmState,
    pub no_network: bool,
    pub token: String,
    pub created_at: String,
    pub pid: Option<u32>,
    /// Start time of `pid` in clock ticks since boot (/proc/PID/stat field 22), so a
    /// recycled PID is never mistaken for our VMM.
    pub pid_start: Option<u64>,
    pub boot: Option<BootTimings>,
    pub last_error: Option<String>,
    /// Host tap device while the VM runs with a network.
    pub tap: Option<String>,
    /// `HOST:GUEST[/udp]` port forwards.
    pub publish: Vec<String>,
    /// What the guest may reach, resolved against the defaults at create.
    pub policy: NetPolicy,
    /// The create has not finished: a daemon that restarts finds it half-made.
    pub creating: bool,
    /// A throwaway VM (`vm run --rm`, MCP runs): nobody can use it after the daemon
    /// that served its one command is gone.
    pub ephemeral: bool,
    /// When the daemon deletes the VM (`--ttl`), in seconds since the Unix epoch.
    pub expires_at: Option<i64>,
    /// Who runs the commands that name no user (`--user`); root when `None`.
    pub user: Option<GuestUser>,
    /// Delete the VM once unused for this long (`--idle-timeout`).
    pub idle_timeout_secs: Option<u64>,
}

impl VmRecord {
    pub fn info(&self, ip: Option<String>) -> VmInfo {
        VmInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            state: self.state,
            backend: self.backend,
            image: self.image.clone(),
            vcpu: self.vcpu,
            memory_mib: self.memory_mib,
            disk_size_mib: self.disk_size_mib,
            ip,
            pid: self.pid,
            created_at: self.created_at.clone(),
            boot: self.boot.clone(),
            last_error: self.last_error.clone(),
            policy: (!self.no_network).then(|| self.policy.clone()),
            expires_at: self.expires_at.map(rfc3339),
            user: self.user.clone(),
            idle_timeout_secs: self.idle_timeout_secs,
        }
    }

    fn from_row(row: &Row<'_>) -> rusqlite::Result<VmRecord> {
        let backend: String = row.get("backend")?;
        let state: String = row.get("state")?;
        let prepare: Option<i64> = row.get("prepare_ms")?;
        let ready: Option<i64> = row.get("agent_ready_ms")?;
        Ok(VmRecord {
            id: row.get("id")?,
            name: row.get("name")?,
            image: row.get("image")?,
            backend: backend.parse().unwrap_or(Backend::Qemu),
            vcpu: row.get("vcpu")?,
            memory_mib: row.get("memory_mib")?,
            disk_size_mib: row.get::<_, i64>("disk_size_mib")? as u64,
            state: VmState::parse(&state).unwrap_or(VmState::Crashed),
            no_network: row.get("no_network")?,
            token: row.get("token")?,
            created_at: row.get("created_at")?,
            pid: row.get("pid")?,
            pid_start: row
                .get::<_, Option<i64>>("pid_start")?
                .filter(|v| *v > 0)
                .map(|v| v as u64),
            boot: match (prepare, ready) {
                (Some(p), Some(r)) => Some(BootTimings {
                    prepare_ms: p as u64,
                    agent_ready_ms: r as u64,
                }),
                _ => None,
            },
            last_error: row.get("last_error")?,
            tap: row.get("tap")?,
            publish: serde_json::from_str(&row.get::<_, String>("publish")?).unwrap_or_default(),
            policy: serde_json::from_str(&row.get::<_, String>("policy")?).unwrap_or_default(),
            creating: row.get("creating")?,
            ephemeral: row.get("ephemeral")?,
            expires_at: row.get("expires_at")?,
            user: row
                .get::<_, Option<String>>("guest_user")?
                .and_then(|u| u.parse().ok()),
            idle_timeout_secs: row
                .get::<_, Option<i64>>("idle_timeout_secs")?
                .and_then(|s| u64::try_from(s).ok()),
        })
    }
}

/// Unix seconds as RFC 3339 (UTC).
fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// One IP lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: String,
    pub vm_id: String,
    pub mac: String,
}

pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) and migrates the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        migrations::migrations()
            .to_latest(&mut conn)
            .map_err(|source| StoreError::Migrate {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Store, StoreError> {
        let mut conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrations::migrations()
            .to_latest(&mut conn)
            .map_err(|source| StoreError::Migrate {
                path: PathBuf::from(":memory:"),
                source,
            })?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (statements
        // are atomic), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    pub fn insert_vm(&self, vm: &VmRecord) -> Result<(), StoreError> {
        let res = self.conn().execute(
            "INSERT INTO vms (id, name, image, backend, vcpu, memory_mib, disk_size_mib, state,
                              no_network, token, created_at, publish, policy, creating,
                              ephemeral, expires_at, guest_user, idle_timeout_secs)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                     ?18)",
            params![
                vm.id,
                vm.name,
                vm.image,
                vm.backend.as_str(),
                vm.vcpu,
                vm.memory_mib,
                vm.disk_size_mib as i64,
                vm.state.as_str(),
                vm.no_network,
                vm.token,
                vm.created_at,
                serde_json::to_string(&vm.publish).unwrap_or_else(|_| "[]".into()),
                serde_json::to_string(&vm.policy).unwrap_or_else(|_| "{}".into()),
                vm.creating,
                vm.ephemeral,
                vm.expires_at,
                vm.user.as_ref().map(|u| u.to_string()),
                vm.idle_timeout_secs.and_then(|s| i64::try_from(s).ok())
            ],
        );
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::NameTaken(vm.name.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Finds a VM by name, or by id.
    pub fn get_vm(&self, name_or_id: &str) -> Result<Option<VmRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT * FROM vms WHERE name = ?1 OR id = ?1 ORDER BY name = ?1 DESC LIMIT 1",
                [name_or_id],
                VmRecord::from_row,
            )
            .optional()?)
    }

    pub fn list_vms(&self) -> Result<Vec<VmRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT * FROM vms ORDER BY created_at, name")?;
        let rows = stmt.query_map([], VmRecord::from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_state(&self, id: &str, state: VmState) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE vms SET state = ?2 WHERE id = ?1",
            params![id, state.as_str()],
        )?;
        Ok(())
    }

    /// Records a running VMM process. An unknown start time (`None`, or 0) is stored as
    /// NULL, and a restarted daemon then never adopts the pid.
    pub fn set_running(
        &self,
        id: &str,
        state: VmState,
        pid: u32,
        pid_start: Option<u64>,
    ) -> Result<(), StoreError> {
        let start = pid_start.filter(|s| *s > 0).map(|s| s as i64);
        self.conn().execute(
            "UPDATE vms SET state = ?2, pid = ?3, pid_start = ?4, last_error = NULL WHERE id = ?1",
            params![id, state.as_str(), pid, start],
        )?;
        Ok(())
    }

    /// The create of VM `id` finished: from now on a restart keeps it.
    pub fn set_created(&self, id: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("UPDATE vms SET creating = 0 WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Records that the VMM is gone: stopped (asked) or crashed (with why).
    pub fn set_exited(
        &self,
        id: &str,
        state: VmState,
        last_error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE vms SET state = ?2, pid = NULL, pid_start = NULL,
                            last_error = COALESCE(?3, last_error) WHERE id = ?1",
            params![id, state.as_str(), last_error],
        )?;
        Ok(())
    }

    pub fn set_boot_timings(&self, id: &str, boot: &BootTimings) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE vms SET prepare_ms = ?2, agent_ready_ms = ?3 WHERE id = ?1",
            params![id, boot.prepare_ms as i64, boot.agent_ready_ms as i64],
        )?;
        Ok(())
    }

    pub fn set_resources(
        &self,
        id: &str,
        vcpu: u32,
        memory_mib: u32,
        disk_size_mib: u64,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE vms SET vcpu = ?2, memory_mib = ?3, disk_size_mib = ?4 WHERE id = ?1",
            params![id, vcpu, memory_mib, disk_size_mib as i64],
        )?;
        Ok(())
    }

    pub fn set_policy(&self, id: &str, policy: &NetPolicy) -> Result<(), StoreError> {
        let json = serde_json::to_string(policy).unwrap_or_else(|_| "{}".into());
        self.conn().execute(
            "UPDATE vms SET policy = ?2 WHERE id = ?1",
            params![id, json],
        )?;
        Ok(())
    }

    /// Sets VM `id`'s port forwards (`HOST:GUEST/PROTO` each).
    pub fn set_publish(&self, id: &str, publish: &[String]) -> Result<(), StoreError> {
        let json = serde_json::to_string(publish).unwrap_or_else(|_| "[]".into());
        self.conn().execute(
            "UPDATE vms SET publish = ?2 WHERE id = ?1",
            params![id, json],
        )?;
        Ok(())
    }

    /// Deletes a VM row and (by cascade) its lease.
    pub fn delete_vm(&self, id: &str) -> Result<(), StoreError> {
        self.conn().execute("DELETE FROM vms WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Sets (or clears) when the daemon deletes VM `id`.
    pub fn set_expiry(&self, id: &str, expires_at: Option<i64>) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE vms SET expires_at = ?2 WHERE id = ?1",
            params![id, expires_at],
        )?;
        Ok(())
    }

    /// Sets (or clears) how long VM `id` may stay unused.
    pub fn set_idle_timeout(&self, id: &str, secs: Option<u64>) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE vms SET idle_timeout_secs = ?2 WHERE id = ?1",
            params![id, secs.and_then(|s| i64::try_from(s).ok())],
        )?;
        Ok(())
    }

    /// Frees the name of VM `id`, which is being deleted, for a new VM: the row is
    /// renamed `deleting-<id>`. (Should a VM be named so on purpose, the rename fails
    /// and the name stays taken until the delete ends.)
    pub fn release_name(&self, id: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE vms SET name = 'deleting-' || id WHERE id = ?1",
            params![id],
        )?;
        Ok(())
    }

    pub fn set_tap(&self, id: &str, tap: Option<&str>) -> Result<(), StoreError> {
        self.conn()
            .execute("UPDATE vms SET tap = ?2 WHERE id = ?1", params![id, tap])?;
        Ok(())
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// The IP leased to the VM named `name`, for DNS.
    pub fn ip_of_name(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT leases.ip FROM leases JOIN vms ON vms.id = leases.vm_id WHERE vms.name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn insert_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO leases (ip, vm_id, mac) VALUES (?1, ?2, ?3)",
            params![lease.ip, lease.vm_id, lease.mac],
        )?;
        Ok(())
    }

    pub fn lease_of(&self, vm_id: &str) -> Result<Option<Lease>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT ip, vm_id, mac FROM leases WHERE vm_id = ?1",
                [vm_id],
                |r| {
                    Ok(Lease {
                        ip: r.get(0)?,
                        vm_id: r.get(1)?,
                        mac: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT ip, vm_id, mac FROM leases ORDER BY ip")?;
        let rows = stmt.query_map([], |r| {
            Ok(Lease {
                ip: r.get(0)?,
                vm_id: r.get(1)?,
                mac: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::store) fn vm(name: &str) -> VmRecord {
        VmRecord {
            id: format!("id-{name}"),
            name: name.into(),
            image: "default".into(),
            backend: Backend::Qemu,
            vcpu: 2,
            memory_mib: 512,
            disk_size_mib: 1024,
            state: VmState::Stopped,
            no_network: false,
            token: "t".into(),
            created_at: "2026-11-24T00:00:00Z".into(),
            pid: None,
            pid_start: None,
            boot: None,
            last_error: None,
            tap: None,
            publish: vec![],
            policy: NetPolicy::default(),
            creating: false,
            ephemeral: false,
            expires_at: None,
            user: None,
            idle_timeout_secs: None,
        }
    }

    #[test]
    fn duplicate_name_is_refused() {
        let store = Store::in_memory().unwrap();
        store.insert_vm(&vm("web")).unwrap();
        let mut dup = vm("web");
        dup.id = "other".into();
        assert!(matches!(store.insert_vm(&dup), Err(StoreError::NameTaken(n)) if n == "web"));
        assert_eq!(store.list_vms().unwrap().len(), 1);
    }

    #[test]
    fn vm_round_trips_and_tracks_process() {
        let store = Store::in_memory().unwrap();
        store.insert_vm(&vm("web")).unwrap();
        store
            .set_running("id-web", VmState::Running, 42, Some(7))
            .unwrap();
        let got = store.get_vm("web").unwrap().unwrap();
        assert_eq!(
            (got.state, got.pid, got.pid_start),
            (VmState::Running, Some(42), Some(7))
        );
        store
            .set_exited("id-web", VmState::Crashed, Some("killed"))
            .unwrap();
        let got = store.get_vm("id-web").unwrap().unwrap();
        assert_eq!((got.state, got.pid), (VmState::Crashed, None));
        assert_eq!(got.last_error.as_deref(), Some("killed"));
    }

    #[test]
    fn an_unknown_start_time_is_never_stored_as_zero() {
        let store = Store::in_memory().unwrap();
        store.insert_vm(&vm("web")).unwrap();
        store.insert_vm(&vm("db")).unwrap();

        store
            .set_running("id-web", VmState::Running, 42, None)
            .unwrap();
        store
            .set_running("id-db", VmState::Running, 43, Some(0))
            .unwrap();

        let web = store.get_vm("web").unwrap().unwrap();
        let db = store.get_vm("db").unwrap().unwrap();
        assert_eq!((web.pid, web.pid_start), (Some(42), None));
        assert_eq!((db.pid, db.pid_start), (Some(43), None));
    }

    #[test]
    fn a_create_is_marked_until_it_finishes() {
        let store = Store::in_memory().unwrap();
        let half = VmRecord {
            creating: true,
            ephemeral: true,
            ..vm("web")
        };
        store.insert_vm(&half).unwrap();
        let got = store.get_vm("web").unwrap().unwrap();
        assert_eq!((got.creating, got.ephemeral), (true, true));

        store.set_created("id-web").unwrap();

        let got = store.get_vm("web").unwrap().unwrap();
        assert_eq!((got.creating, got.ephemeral), (false, true));
    }

    #[test]
    fn an_expiry_is_stored_and_shown_in_rfc3339() {
        let store = Store::in_memory().unwrap();
        store.insert_vm(&vm("web")).unwrap();

        store.set_expiry("id-web", Some(1_800_000_000)).unwrap();

        let got = store.get_vm("web").unwrap().unwrap();
        assert_eq!(got.expires_at, Some(1_800_000_000));
        assert_eq!(
            got.info(None).expires_at.as_deref(),
            Some("2027-01-15T08:00:00Z")
        );
    }

    #[test]
    fn a_default_user_is_stored_and_shown() {
        let store = Store::in_memory().unwrap();
        let dev = VmRecord {
            user: Some("dev:1500".parse().unwrap()),
            ..vm("web")
        };

        store.insert_vm(&dev).unwrap();
        store.insert_vm(&vm("db")).unwrap();

        let web = store.get_vm("web").unwrap().unwrap().info(None);
        let db = store.get_vm("db").unwrap().unwrap().info(None);
        assert_eq!(web.user.map(|u| u.to_string()).as_deref(), Some("dev:1500"));
        assert_eq!(db.user, None);
    }

    #[test]
    fn deleting_a_vm_frees_its_lease() {
        let store = Store::in_memory().unwrap();
        store.insert_vm(&vm("web")).unwrap();
        let lease = Lease {
            ip: "172.30.0.2".into(),
            vm_id: "id-web".into(),
            mac: "02:00".into(),
        };
        store.insert_lease(&lease).unwrap();
        assert_eq!(store.lease_of("id-web").unwrap(), Some(lease));
        store.delete_vm("id-web").unwrap();
        assert!(store.leases().unwrap().is_empty());
    }

    #[test]
    fn committed_rows_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let store = Store::open(&path).unwrap();
            store.insert_vm(&vm("web")).unwrap();
            // Dropped without any clean shutdown, as after SIGKILL.
            std::mem::forget(store);
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.get_vm("web").unwrap().map(|v| v.name),
            Some("web".into())
        );
        assert_eq!(store.schema_version().unwrap() as usize, MIGRATIONS.len());
    }
}
