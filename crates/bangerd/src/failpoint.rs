//! Kill points for the crash-consistency test: `failpoint("create.after_insert")` at
//! each step of a multi-step operation. When `BANGER_FAILPOINT` names the point, the
//! daemon SIGKILLs itself there, as if the host killed it at that instant. Compiled in
//! always; costs one environment read, cached on first use.

use std::sync::OnceLock;

/// Every kill point, in the order an operation reaches them. `scripts/smoke.sh`
/// (scenario `crash-points`, through `bangerd --failpoints`) kills the daemon at each.
pub const POINTS: &[&str] = &[
    // Cold create (`vm create`, `vm run`).
    "create.after_insert",
    "create.after_lease",
    "create.after_disk",
    "create.after_boot",
    // Boot (`vm start`, and inside every create and clone).
    "boot.after_attach",
    "boot.after_launch",
    "boot.after_track",
    // `vm delete` of a running VM.
    "delete.after_halt",
    "delete.after_row",
    // `vm snapshot` of a running VM.
    "snapshot.after_pause",
    "snapshot.after_disk_copy",
    "snapshot.after_save",
    "snapshot.after_resume",
    // `vm snapshot delete`.
    "snapshot_delete.after_row",
    // `vm create --from-snapshot`.
    "clone.after_insert",
    "clone.after_disk_copy",
    "clone.after_boot",
    // `image import` and `image delete`.
    "import.after_tree",
    "import.after_rootfs",
    "import.after_commit",
    "image_delete.after_rename",
];

/// The environment variable that arms one point.
pub const ENV: &str = "BANGER_FAILPOINT";

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED.get_or_init(|| std::env::var(ENV).ok()).as_deref()
}

/// Kills the daemon with SIGKILL if `name` is the armed point.
pub fn failpoint(name: &'static str) {
    debug_assert!(POINTS.contains(&name), "failpoint {name} is not in POINTS");
    if armed() == Some(name) {
        tracing::error!(failpoint = %name, "failpoint reached; killing the daemon");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_is_named_once_and_used_in_the_source() {
        let mut names = POINTS.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), POINTS.len());
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut text = String::new();
        let mut dirs = vec![std::path::PathBuf::from(src)];
        while let Some(dir) = dirs.pop() {
            for e in fs_err::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.file_name().is_some_and(|n| n != "failpoint.rs") {
                    text.push_str(&fs_err::read_to_string(&p).unwrap());
                }
            }
        }
        for p in POINTS {
            assert!(text.contains(&format!("failpoint(\"{p}\")")), "{p} unused");
        }
    }
}
