//! Embedded, append-only schema migrations. Never edit a migration that has shipped:
//! add a new one at the end. The schema version is SQLite's `user_version`.

use rusqlite_migration::{Migrations, M};

/// Every migration, oldest first.
pub const STEPS: &[&str] = &[
    // 1: VMs and their IP leases.
    r#"
    CREATE TABLE vms (
        id             TEXT PRIMARY KEY,
        name           TEXT NOT NULL UNIQUE,
        image          TEXT NOT NULL,
        backend        TEXT NOT NULL,
        vcpu           INTEGER NOT NULL,
        memory_mib     INTEGER NOT NULL,
        disk_size_mib  INTEGER NOT NULL,
        state          TEXT NOT NULL,
        no_network     INTEGER NOT NULL DEFAULT 0,
        token          TEXT NOT NULL,
        created_at     TEXT NOT NULL,
        pid            INTEGER,
        pid_start      INTEGER,
        prepare_ms     INTEGER,
        agent_ready_ms INTEGER,
        last_error     TEXT
    ) STRICT;
    CREATE TABLE leases (
        ip    TEXT PRIMARY KEY,
        vm_id TEXT NOT NULL UNIQUE REFERENCES vms(id) ON DELETE CASCADE,
        mac   TEXT NOT NULL
    ) STRICT;
    "#,
    // 2: host networking: the VM's tap while it runs, its published ports, and daemon
    // facts that must survive restarts (the subnet in use).
    r#"
    ALTER TABLE vms ADD COLUMN tap TEXT;
    ALTER TABLE vms ADD COLUMN publish TEXT NOT NULL DEFAULT '[]';
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;
    "#,
    // 3: snapshots of running VMs, and the warm snapshots of images `vm run` resumes.
    r#"
    CREATE TABLE snapshots (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL UNIQUE,
        vm_name       TEXT NOT NULL,
        image         TEXT NOT NULL,
        image_digest  TEXT NOT NULL,
        backend       TEXT NOT NULL,
        vcpu          INTEGER NOT NULL,
        memory_mib    INTEGER NOT NULL,
        disk_size_mib INTEGER NOT NULL,
        no_network    INTEGER NOT NULL,
        token         TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        paused_ms     INTEGER NOT NULL,
        warm          INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    "#,
    // 4: each VM's network policy (JSON of `NetPolicy`); older VMs become isolated.
    r#"
    ALTER TABLE vms ADD COLUMN policy TEXT NOT NULL DEFAULT '{}';
    "#,
    // 5: crash consistency: a row whose create has not finished (`creating`), and the
    // throwaway VMs of `vm run --rm` and MCP (`ephemeral`); a restarted daemon deletes
    // both with everything they hold. A start time of 0 was never a real one.
    r#"
    ALTER TABLE vms ADD COLUMN creating INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE vms ADD COLUMN ephemeral INTEGER NOT NULL DEFAULT 0;
    UPDATE vms SET pid_start = NULL WHERE pid_start = 0;
    "#,
    // 6: lifetimes: when the daemon deletes the VM (`--ttl`), in Unix seconds.
    r#"
    ALTER TABLE vms ADD COLUMN expires_at INTEGER;
    "#,
    // 7: the user a VM's commands run as by default (`--user NAME[:UID]`); NULL: root.
    r#"
    ALTER TABLE vms ADD COLUMN guest_user TEXT;
    "#,
    // 8: the hot pool: VMs restored ahead of time from a warm snapshot, paused, for
    // the creates of `machine` (their machine and network policy) to take.
    r#"
    CREATE TABLE pool (
        vm_id TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
        machine TEXT NOT NULL,
        snapshot TEXT NOT NULL,
        ready INTEGER NOT NULL DEFAULT 0
    );
    "#,
    // 9: an image's own pool size (`image warm NAME --pool N`), over the config's.
    r#"
    CREATE TABLE image_pools (
        image TEXT PRIMARY KEY,
        size INTEGER NOT NULL
    ) STRICT;
    "#,
    // 10: idle timeouts: the daemon deletes a VM unused for this many seconds. (After
    // 9, which main had shipped first.)
    r#"
    ALTER TABLE vms ADD COLUMN idle_timeout_secs INTEGER;
    "#,
];

pub fn migrations() -> Migrations<'static> {
    Migrations::new(STEPS.iter().map(|sql| M::up(sql)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn migrations_are_valid() {
        assert!(migrations().validate().is_ok());
    }

    #[test]
    fn fresh_database_reaches_latest_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrations().to_latest(&mut conn).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, STEPS.len());
    }

    #[test]
    fn every_earlier_version_upgrades_to_latest() {
        for from in 0..=STEPS.len() {
            let mut conn = Connection::open_in_memory().unwrap();
            if from > 0 {
                let m = Migrations::new(STEPS[..from].iter().map(|sql| M::up(sql)).collect());
                m.to_latest(&mut conn).unwrap();
            }
            migrations().to_latest(&mut conn).unwrap();
            let v: i64 = conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap();
            assert_eq!(v as usize, STEPS.len(), "upgrade from version {from}");
            conn.execute_batch("SELECT id, name, state, pid_start, tap, publish, creating, ephemeral, expires_at, guest_user, idle_timeout_secs FROM vms; SELECT ip FROM leases; SELECT key FROM meta; SELECT name, warm FROM snapshots; SELECT vm_id, machine, snapshot, ready FROM pool; SELECT image, size FROM image_pools;")
                .unwrap();
        }
    }
}
