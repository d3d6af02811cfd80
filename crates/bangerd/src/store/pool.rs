//! The hot pool's rows: which VMs are paused clones waiting to be taken (see
//! `vm::pool`), and the pool sizes images set for themselves. A pooled VM is also an
//! ordinary, ephemeral VM row, so a restarted daemon deletes it with everything it
//! holds.

use banger_wire::user::GuestUser;
use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};

/// One pooled VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolEntry {
    pub vm_id: String,
    /// The machine and network policy it serves.
    pub machine: String,
    /// The warm snapshot it was restored from.
    pub snapshot: String,
    /// Restored and paused; not ready while it is being made.
    pub ready: bool,
}

impl Store {
    /// Marks VM `vm_id`, being made, as a clone for `machine`'s pool.
    pub fn pool_add(&self, vm_id: &str, machine: &str, snapshot: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO pool (vm_id, machine, snapshot) VALUES (?1, ?2, ?3)",
            params![vm_id, machine, snapshot],
        )?;
        Ok(())
    }

    pub fn pool_set_ready(&self, vm_id: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("UPDATE pool SET ready = 1 WHERE vm_id = ?1", [vm_id])?;
        Ok(())
    }

    /// Takes ready VM `vm_id` out of reach of creates, to delete it (a pool shrunk):
    /// false when a create took it first.
    pub fn pool_claim(&self, vm_id: &str) -> Result<bool, StoreError> {
        let changed = self.conn().execute(
            "UPDATE pool SET ready = 0 WHERE vm_id = ?1 AND ready = 1",
            [vm_id],
        )?;
        Ok(changed == 1)
    }

    pub fn pool_entries(&self) -> Result<Vec<PoolEntry>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT vm_id, machine, snapshot, ready FROM pool")?;
        let rows = stmt.query_map([], |r| {
            Ok(PoolEntry {
                vm_id: r.get(0)?,
                machine: r.get(1)?,
                snapshot: r.get(2)?,
                ready: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Takes a ready VM of `machine`'s pool restored from `snapshot` out of the pool,
    /// under the name `name`, with `ephemeral` and the default guest `user` of the
    /// create that takes it, in one transaction: no other create takes it too, and a
    /// name another VM has is refused.
    pub fn pool_take(
        &self,
        machine: &str,
        snapshot: &str,
        name: &str,
        ephemeral: bool,
        user: Option<&GuestUser>,
    ) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let Some(id) = tx
            .query_row(
                "SELECT vm_id FROM pool WHERE machine = ?1 AND snapshot = ?2 AND ready = 1 LIMIT 1",
                [machine, snapshot],
                |r| r.get::<_, String>(0),
            )
            .optional()?
        else {
            return Ok(None);
        };
        tx.execute("DELETE FROM pool WHERE vm_id = ?1", [&id])?;
        let renamed = tx.execute(
            "UPDATE vms SET name = ?2, ephemeral = ?3, guest_user = ?4 WHERE id = ?1",
            params![id, name, ephemeral, user.map(|u| u.to_string())],
        );
        match renamed {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(StoreError::NameTaken(name.to_string()))
            }
            r => r?,
        };
        tx.commit()?;
        Ok(Some(id))
    }

    /// The pool size image `image` set for itself (`image warm --pool N`), if any.
    pub fn image_pool_size(&self, image: &str) -> Result<Option<u32>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT size FROM image_pools WHERE image = ?1",
                [image],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Sets image `image`'s own pool size; `None` returns it to the config's.
    pub fn set_image_pool_size(&self, image: &str, size: Option<u32>) -> Result<(), StoreError> {
        let conn = self.conn();
        match size {
            Some(size) => conn.execute(
                "INSERT INTO image_pools (image, size) VALUES (?1, ?2)
                 ON CONFLICT(image) DO UPDATE SET size = excluded.size",
                params![image, size],
            )?,
            None => conn.execute("DELETE FROM image_pools WHERE image = ?1", [image])?,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::vm;

    #[test]
    fn a_pooled_vm_is_taken_once_and_only_when_ready() {
        let s = Store::in_memory().unwrap();
        s.insert_vm(&vm("pool-1")).unwrap();
        s.pool_add("id-pool-1", "m", "snap").unwrap();

        assert_eq!(s.pool_take("m", "snap", "web", true, None).unwrap(), None);
        s.pool_set_ready("id-pool-1").unwrap();
        assert_eq!(s.pool_take("m", "other", "web", true, None).unwrap(), None);
        assert_eq!(
            s.pool_take("m", "snap", "web", true, None).unwrap(),
            Some("id-pool-1".into())
        );
        assert_eq!(s.pool_take("m", "snap", "web2", true, None).unwrap(), None);
        let taken = s.get_vm("web").unwrap().unwrap();
        assert_eq!((taken.id.as_str(), taken.ephemeral), ("id-pool-1", true));
        assert_eq!(taken.user, None);
        assert!(s.pool_entries().unwrap().is_empty());
    }

    #[test]
    fn a_taken_vm_runs_as_the_user_of_the_create_that_took_it() {
        let s = Store::in_memory().unwrap();
        s.insert_vm(&vm("pool-1")).unwrap();
        s.pool_add("id-pool-1", "m", "snap").unwrap();
        s.pool_set_ready("id-pool-1").unwrap();
        let dev: GuestUser = "dev:1500".parse().unwrap();

        s.pool_take("m", "snap", "web", true, Some(&dev)).unwrap();

        assert_eq!(s.get_vm("web").unwrap().unwrap().user, Some(dev));
    }

    #[test]
    fn a_taken_name_leaves_the_vm_in_the_pool() {
        let s = Store::in_memory().unwrap();
        s.insert_vm(&vm("pool-1")).unwrap();
        s.insert_vm(&vm("web")).unwrap();
        s.pool_add("id-pool-1", "m", "snap").unwrap();
        s.pool_set_ready("id-pool-1").unwrap();

        let err = s.pool_take("m", "snap", "web", false, None).unwrap_err();

        assert!(matches!(err, StoreError::NameTaken(_)));
        assert_eq!(s.pool_entries().unwrap().len(), 1);
    }

    #[test]
    fn a_claimed_vm_is_not_taken() {
        let s = Store::in_memory().unwrap();
        s.insert_vm(&vm("pool-1")).unwrap();
        s.pool_add("id-pool-1", "m", "snap").unwrap();
        s.pool_set_ready("id-pool-1").unwrap();

        assert!(s.pool_claim("id-pool-1").unwrap());
        assert!(!s.pool_claim("id-pool-1").unwrap());
        assert_eq!(s.pool_take("m", "snap", "web", true, None).unwrap(), None);
    }

    #[test]
    fn an_image_pool_size_is_kept_until_unset() {
        let s = Store::in_memory().unwrap();

        assert_eq!(s.image_pool_size("default").unwrap(), None);
        s.set_image_pool_size("default", Some(3)).unwrap();
        s.set_image_pool_size("default", Some(0)).unwrap();
        assert_eq!(s.image_pool_size("default").unwrap(), Some(0));
        assert_eq!(s.image_pool_size("other").unwrap(), None);
        s.set_image_pool_size("default", None).unwrap();
        assert_eq!(s.image_pool_size("default").unwrap(), None);
    }

    #[test]
    fn deleting_a_pooled_vm_drops_its_pool_row() {
        let s = Store::in_memory().unwrap();
        s.insert_vm(&vm("pool-1")).unwrap();
        s.pool_add("id-pool-1", "m", "snap").unwrap();

        s.delete_vm("id-pool-1").unwrap();

        assert!(s.pool_entries().unwrap().is_empty());
    }
}
