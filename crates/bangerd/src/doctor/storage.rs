//! Storage checks: the SQLite store, the default image, free disk.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::{Check, Ctx};
use crate::store::MIGRATIONS;

const GIB: u64 = 1 << 30;
/// Below this much free space on the state filesystem, VM disks cannot be created.
const FAIL_BELOW: u64 = 2 * GIB;
/// Below this much, a couple of VMs or an image build will fill the disk.
const WARN_BELOW: u64 = 10 * GIB;

/// `state.db` is absent (fine) or opens read-only and passes `PRAGMA quick_check`.
pub(super) fn store(ctx: &Ctx<'_>) -> Check {
    const NAME: &str = "store";
    let db = ctx.paths.db();
    if !db.exists() {
        return Check::pass(
            "store",
            NAME,
            format!("{} will be created on first daemon start", db.display()),
        );
    }
    if let Err(e) = fs_err::File::open(&db) {
        return Check::fail(
            "store",
            NAME,
            e.to_string(),
            format!(
                "sudo banger doctor  # {} belongs to another user",
                db.display()
            ),
        );
    }
    let known = MIGRATIONS.len() as i64;
    match inspect(&db) {
        Ok(v) if v > known => Check::fail(
            "store",
            NAME,
            format!(
                "{} has schema v{v}, newer than this banger (v{known})",
                db.display()
            ),
            "# upgrade banger to the version that wrote this store",
        ),
        Ok(v) if v < known => Check::pass(
            "store",
            NAME,
            format!(
                "{} schema v{v}, migrated to v{known} on next daemon start",
                db.display()
            ),
        ),
        Ok(v) => Check::pass("store", NAME, format!("{} schema v{v}", db.display())),
        Err(e) => {
            let aside = db.with_extension("db.broken");
            Check::fail(
                "store",
                NAME,
                format!("{} is unreadable: {e}", db.display()),
                format!(
                    "banger daemon stop; mv {} {}  # banger forgets its VMs",
                    db.display(),
                    aside.display()
                ),
            )
        }
    }
}

/// Opens `db` read-only, checks it, and returns its schema version (`user_version`).
fn inspect(db: &Path) -> rusqlite::Result<i64> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_millis(500))?;
    let verdict: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if verdict != "ok" {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(verdict),
        ));
    }
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// The images that lack what some verbs need (a pulled container image often has no
/// sshd, sometimes no shell): they boot to the agent, but say what does not work.
pub(super) fn image_gaps(ctx: &Ctx<'_>) -> Check {
    let name = "image contents";
    let images = crate::image::list(ctx.paths).unwrap_or_default();
    let gaps: Vec<String> = images
        .iter()
        .filter(|i| !i.manifest().lacks.is_empty())
        .map(|i| format!("{} lacks {}", i.name(), i.manifest().lacks.join(" and ")))
        .collect();
    if gaps.is_empty() {
        return Check::pass("image_gaps", name, "every image has sshd and /bin/sh");
    }
    Check::warn(
        "image_gaps",
        name,
        format!(
            "{} (no sshd: `vm ssh` unavailable; no shell: `vm run` needs a command, no \
             workspaces or `vm cp`)",
            gaps.join("; ")
        ),
        "# use `vm exec`/`vm run -- CMD`, or an image with openssh-server and a shell",
    )
}

/// `images/<default_image>/manifest.json` exists.
pub(super) fn default_image(ctx: &Ctx<'_>) -> Check {
    let image = &ctx.config.default_image;
    let name = format!("image {image}");
    let manifest = ctx.paths.images_dir().join(image).join("manifest.json");
    if manifest.is_file() {
        Check::pass(
            "default_image",
            name,
            format!("{}", manifest.parent().unwrap_or(&manifest).display()),
        )
    } else {
        Check::warn(
            "default_image",
            name,
            format!("default image not built ({} missing)", manifest.display()),
            "banger image build",
        )
    }
}

/// Free space on the filesystem that holds the state dir.
pub(super) fn free_disk(ctx: &Ctx<'_>) -> Check {
    let dir = existing_ancestor(&ctx.paths.state_dir);
    match rustix::fs::statvfs(&dir) {
        Ok(st) => disk_verdict(
            &ctx.paths.state_dir,
            st.f_bavail.saturating_mul(st.f_frsize),
        ),
        Err(e) => Check::fail(
            "free_disk",
            "free disk",
            format!("cannot statvfs {}: {e}", dir.display()),
            format!("df -h {}", dir.display()),
        ),
    }
}

/// The state dir may not exist yet; measure the filesystem it will be created on.
fn existing_ancestor(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

fn disk_verdict(state_dir: &Path, avail: u64) -> Check {
    let detail = format!("{} free for {}", human(avail), state_dir.display());
    let fix = format!(
        "du -xh --max-depth=2 {} | sort -h | tail  # free space, or set BANGER_STATE_DIR to a bigger disk",
        existing_ancestor(state_dir).display()
    );
    if avail < FAIL_BELOW {
        Check::fail(
            "free_disk",
            "free disk",
            format!("{detail}; need at least 2 GiB"),
            fix,
        )
    } else if avail < WARN_BELOW {
        Check::warn(
            "free_disk",
            "free disk",
            format!("{detail}; 10 GiB or more recommended"),
            fix,
        )
    } else {
        Check::pass("free_disk", "free disk", detail)
    }
}

fn human(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / GIB as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::{testing::fake_host, Status};
    use banger_host::config::{Config, Paths};

    #[test]
    fn missing_store_passes() {
        let t = tempfile::tempdir().unwrap();
        let (host, paths, config) = (
            fake_host(t.path()),
            Paths::under(t.path()),
            Config::default(),
        );

        let check = store(&Ctx::new(&host, &paths, &config));

        assert_eq!(check.status, Status::Pass);
        assert!(
            check
                .detail
                .ends_with("will be created on first daemon start"),
            "{}",
            check.detail
        );
    }

    #[test]
    fn corrupt_store_fails_with_move_aside_fix() {
        let t = tempfile::tempdir().unwrap();
        let paths = Paths::under(t.path());
        fs_err::create_dir_all(&paths.state_dir).unwrap();
        fs_err::write(paths.db(), vec![0x5a; 8192]).unwrap();
        let (host, config) = (fake_host(t.path()), Config::default());

        let check = store(&Ctx::new(&host, &paths, &config));

        assert_eq!(check.status, Status::Fail);
        assert!(
            check
                .detail
                .contains("is unreadable: file is not a database"),
            "{}",
            check.detail
        );
        assert!(check.fix.unwrap().contains("state.db.broken"));
    }

    #[test]
    fn migrated_store_passes_with_schema_version() {
        let t = tempfile::tempdir().unwrap();
        let paths = Paths::under(t.path());
        fs_err::create_dir_all(&paths.state_dir).unwrap();
        drop(crate::store::Store::open(&paths.db()).unwrap());
        let (host, config) = (fake_host(t.path()), Config::default());

        let check = store(&Ctx::new(&host, &paths, &config));

        assert_eq!(check.status, Status::Pass);
        assert_eq!(
            check.detail,
            format!("{} schema v{}", paths.db().display(), MIGRATIONS.len())
        );
    }

    #[test]
    fn default_image_missing_warns_and_present_passes() {
        let t = tempfile::tempdir().unwrap();
        let (host, paths, config) = (
            fake_host(t.path()),
            Paths::under(t.path()),
            Config::default(),
        );
        let missing = default_image(&Ctx::new(&host, &paths, &config));
        let dir = paths.images_dir().join("default");
        fs_err::create_dir_all(&dir).unwrap();
        fs_err::write(dir.join("manifest.json"), "{}").unwrap();

        let present = default_image(&Ctx::new(&host, &paths, &config));

        assert_eq!(missing.status, Status::Warn);
        assert_eq!(missing.fix.as_deref(), Some("banger image build"));
        assert_eq!(present.status, Status::Pass);
    }

    #[test]
    fn disk_thresholds() {
        let dir = Path::new("/nonexistent/banger");

        assert_eq!(disk_verdict(dir, GIB).status, Status::Fail);
        assert_eq!(disk_verdict(dir, 5 * GIB).status, Status::Warn);
        assert_eq!(
            disk_verdict(dir, 50 * GIB).detail,
            "50.0 GiB free for /nonexistent/banger"
        );
    }
}
