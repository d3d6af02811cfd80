//! Checks a parsed patch against the host repository before anything is applied:
//! every path stays inside the working tree and out of `.git`, nothing is written
//! through a symlink, every symlink the patch leaves behind points inside, and every
//! mode is a plain file, executable or symlink. Resolving symlinks has a total budget
//! per patch, so a chain of links cannot make the check run for hours.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::patch::{is_gitlink, is_symlink, show, FilePatch, Refusal, ALLOWED_MODES, SYMLINK_MODE};

/// Symlinks followed while resolving one target, like the kernel's limit.
const MAX_HOPS: usize = 40;
/// Path components looked at while resolving all the symlinks of one patch.
pub const LINK_BUDGET: usize = 200_000;
/// Longest symlink target or file read as one.
const MAX_TARGET: u64 = 4096;

/// Refuses the patch unless every file it touches stays safely inside `root`.
pub fn check(root: &Path, patches: &[FilePatch]) -> Result<(), Refusal> {
    for fp in patches {
        for path in &fp.paths {
            check_path(path)?;
        }
        check_modes(fp)?;
    }
    let view = View::after(root, patches)?;
    for fp in patches {
        for path in &fp.paths {
            view.no_symlink_above(path)?;
        }
    }
    for (path, target) in view.post.iter().filter_map(|(p, t)| Some((p, t.as_ref()?))) {
        view.check_link(path, target)?;
    }
    Ok(())
}

/// Refuses a submodule and any mode but 100644, 100755 and 120000: git picks the
/// kind of file by the type bits alone, so `120755` would still make a symlink.
fn check_modes(fp: &FilePatch) -> Result<(), Refusal> {
    let path = || show(fp.paths.first().map_or(&[][..], Vec::as_slice));
    for mode in [fp.old_mode, fp.new_mode].into_iter().flatten() {
        if is_gitlink(mode) {
            return Err(Refusal::Submodule { path: path() });
        }
        if !ALLOWED_MODES.contains(&mode) {
            return Err(Refusal::Mode { path: path(), mode });
        }
    }
    Ok(())
}

/// A plain relative path: no absolute start, no `..`, `.` or empty parts, no `.git`.
pub fn check_path(path: &[u8]) -> Result<(), Refusal> {
    let shown = || show(path);
    if path.starts_with(b"/") {
        return Err(Refusal::Absolute { path: shown() });
    }
    if path.is_empty() || path.contains(&0) {
        return Err(Refusal::Unclean { path: shown() });
    }
    for part in path.split(|b| *b == b'/') {
        match part {
            b".." => return Err(Refusal::DotDot { path: shown() }),
            b"" | b"." => return Err(Refusal::Unclean { path: shown() }),
            p if p.eq_ignore_ascii_case(b".git") => return Err(Refusal::GitDir { path: shown() }),
            _ => {}
        }
    }
    Ok(())
}

/// The repository as it would be after the patch, as far as symlinks go.
struct View<'a> {
    root: &'a Path,
    /// Paths the patch changes: `Some(target)` if a symlink afterwards, else `None`.
    post: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Resolution steps left for the whole patch.
    budget: Cell<usize>,
}

impl<'a> View<'a> {
    fn after(root: &'a Path, patches: &[FilePatch]) -> Result<View<'a>, Refusal> {
        let mut view = View {
            root,
            post: HashMap::new(),
            budget: Cell::new(LINK_BUDGET),
        };
        for fp in patches {
            if let Some(old) = &fp.old_path {
                if fp
                    .new_path
                    .as_ref()
                    .is_none_or(|new| new != old && !fp.copy)
                {
                    view.post.insert(old.clone(), None);
                }
            }
            let Some(new) = &fp.new_path else { continue };
            let mode = match (fp.new_mode, &fp.old_path) {
                (Some(mode), _) => Some(mode),
                (None, Some(old)) => view.host_link(old).is_some().then_some(SYMLINK_MODE),
                (None, None) => None,
            };
            let target = match mode {
                Some(mode) if is_symlink(mode) => Some(view.link_target(fp, new)?),
                _ => None,
            };
            view.post.insert(new.clone(), target);
        }
        Ok(view)
    }

    fn full(&self, path: &[u8]) -> PathBuf {
        self.root.join(OsStr::from_bytes(path))
    }

    fn host_link(&self, path: &[u8]) -> Option<Vec<u8>> {
        let full = self.full(path);
        let meta = fs_err::symlink_metadata(&full).ok()?;
        if !meta.file_type().is_symlink() {
            return None;
        }
        Some(
            fs_err::read_link(&full)
                .ok()?
                .into_os_string()
                .into_encoded_bytes(),
        )
    }

    /// What a host path holds as a one-line symlink target: its link target, or its
    /// content if it is a short file.
    fn host_content(&self, path: &[u8]) -> Option<Vec<u8>> {
        if let Some(target) = self.host_link(path) {
            return Some(target);
        }
        let full = self.full(path);
        let meta = fs_err::symlink_metadata(&full).ok()?;
        if !meta.is_file() || meta.len() > MAX_TARGET {
            return None;
        }
        fs_err::read(full).ok()
    }

    /// The target the symlink at `new` has after the patch, when the patch shows it
    /// completely (a single-line before and after).
    fn link_target(&self, fp: &FilePatch, new: &[u8]) -> Result<Vec<u8>, Refusal> {
        let unchecked = || Refusal::SymlinkUnchecked { path: show(new) };
        let before = match &fp.old_path {
            Some(old) => Some(self.host_content(old).ok_or_else(unchecked)?),
            None => None,
        };
        if fp.binary || before.as_ref().is_some_and(|b| b.contains(&b'\n')) {
            return Err(unchecked());
        }
        let target = match (fp.hunks.as_slice(), before) {
            ([], Some(before)) => before,
            ([hunk], before) => {
                let covers_all = match before.as_deref() {
                    None | Some(b"") => hunk.old_count == 0,
                    Some(_) => hunk.old_start == 1 && hunk.old_count == 1,
                };
                if !covers_all {
                    return Err(unchecked());
                }
                fp.post_image.clone().ok_or_else(unchecked)?
            }
            _ => return Err(unchecked()),
        };
        if target.is_empty() || target.contains(&b'\n') || target.contains(&0) {
            return Err(unchecked());
        }
        Ok(target)
    }

    /// The symlink target at `path` after the patch, if it is a symlink then.
    fn link_at(&self, path: &[u8]) -> Option<Vec<u8>> {
        match self.post.get(path) {
            Some(target) => target.clone(),
            None => self.host_link(path),
        }
    }

    /// Refuses a path that has a symlink (now or after the patch) above it.
    fn no_symlink_above(&self, path: &[u8]) -> Result<(), Refusal> {
        for (i, _) in path.iter().enumerate().filter(|(_, b)| **b == b'/') {
            let prefix = &path[..i];
            let now = self.host_link(prefix).is_some();
            let after = matches!(self.post.get(prefix), Some(Some(_)));
            if now || after {
                return Err(Refusal::ThroughSymlink {
                    path: show(path),
                    link: show(prefix),
                });
            }
        }
        Ok(())
    }

    /// Refuses a symlink whose target resolves (through any symlinks on the way)
    /// outside the repository or into `.git`.
    fn check_link(&self, path: &[u8], target: &[u8]) -> Result<(), Refusal> {
        let mut dir: Vec<Vec<u8>> = path.split(|b| *b == b'/').map(<[u8]>::to_vec).collect();
        dir.pop();
        let escapes = || Refusal::SymlinkEscapes {
            path: show(path),
            target: show(target),
        };
        let resolved = self.resolve(dir, target, 0)?.ok_or_else(escapes)?;
        if resolved.iter().any(|p| p.eq_ignore_ascii_case(b".git")) {
            return Err(Refusal::SymlinkIntoGit {
                path: show(path),
                target: show(target),
            });
        }
        Ok(())
    }

    /// Where `target`, read from directory `cur`, ends up; `None` if it leaves the
    /// repository (absolute, too many `..`) or loops; an error once the patch's
    /// budget of steps is spent.
    fn resolve(
        &self,
        mut cur: Vec<Vec<u8>>,
        target: &[u8],
        hops: usize,
    ) -> Result<Option<Vec<Vec<u8>>>, Refusal> {
        if hops > MAX_HOPS || target.starts_with(b"/") {
            return Ok(None);
        }
        for part in target.split(|b| *b == b'/') {
            let left = self
                .budget
                .get()
                .checked_sub(1)
                .ok_or(Refusal::LinkBudget { limit: LINK_BUDGET })?;
            self.budget.set(left);
            match part {
                b"" | b"." => {}
                b".." => {
                    if cur.pop().is_none() {
                        return Ok(None);
                    }
                }
                name => {
                    cur.push(name.to_vec());
                    if let Some(next) = self.link_at(&cur.join(&b'/')) {
                        cur.pop();
                        match self.resolve(cur, &next, hops + 1)? {
                            Some(resolved) => cur = resolved,
                            None => return Ok(None),
                        }
                    }
                }
            }
        }
        Ok(Some(cur))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::workspace::patch::parse;
    use crate::workspace::testkit::TempRepo;

    fn check_str(root: &Path, patch: &str) -> Result<(), Refusal> {
        check(root, &parse(patch.as_bytes()).unwrap())
    }

    /// A patch that creates `path` as a one-line file.
    fn new_file(path: &str) -> String {
        format!(
            "diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+x\n"
        )
    }

    /// A patch that creates `path` as a symlink to `target`.
    fn new_link(path: &str, target: &str) -> String {
        format!(
            "diff --git a/{path} b/{path}\nnew file mode 120000\n--- /dev/null\n+++ b/{path}\n\
             @@ -0,0 +1 @@\n+{target}\n\\ No newline at end of file\n"
        )
    }

    #[test]
    fn plain_paths_and_inside_symlinks_pass() {
        let repo = TempRepo::new();
        let patch = new_file("src/main.rs") + &new_link("docs/latest", "../src/main.rs");

        assert!(check_str(repo.path(), &patch).is_ok());
    }

    #[test]
    fn dot_dot_is_refused() {
        let repo = TempRepo::new();

        let err = check_str(repo.path(), &new_file("../x")).unwrap_err();

        assert_eq!(err.to_string(), "path \"../x\" climbs out with `..`");
    }

    #[test]
    fn absolute_paths_are_refused() {
        let repo = TempRepo::new();

        let err = check_str(repo.path(), &new_file("/etc/x")).unwrap_err();

        assert!(matches!(err, Refusal::Absolute { .. }), "{err:?}");
    }

    #[test]
    fn a_rename_source_outside_is_refused() {
        let repo = TempRepo::new();
        let patch = "diff --git a/x b/y\nsimilarity index 100%\nrename from ../../x\nrename to y\n";

        let err = check_str(repo.path(), patch).unwrap_err();

        assert!(matches!(err, Refusal::DotDot { .. }), "{err:?}");
    }

    #[test]
    fn dot_git_in_any_case_is_refused() {
        let repo = TempRepo::new();

        let err = check_str(repo.path(), &new_file("sub/.GiT/hooks/pre-commit")).unwrap_err();

        assert!(matches!(err, Refusal::GitDir { .. }), "{err:?}");
    }

    #[test]
    fn writing_through_a_host_symlink_is_refused() {
        let repo = TempRepo::new();
        let outside = tempfile::tempdir().unwrap();
        repo.symlink(outside.path().to_str().unwrap(), "out");

        let err = check_str(repo.path(), &new_file("out/x")).unwrap_err();

        assert_eq!(
            err.to_string(),
            "path \"out/x\" goes through the symlink \"out\""
        );
    }

    #[test]
    fn writing_through_a_symlink_the_patch_makes_is_refused() {
        let repo = TempRepo::new();
        let patch = new_link("d", "sub") + &new_file("d/x");

        let err = check_str(repo.path(), &patch).unwrap_err();

        assert!(matches!(err, Refusal::ThroughSymlink { .. }), "{err:?}");
    }

    #[test]
    fn symlinks_pointing_out_are_refused() {
        let repo = TempRepo::new();

        let up = check_str(repo.path(), &new_link("a/evil", "../../etc")).unwrap_err();
        let abs = check_str(repo.path(), &new_link("evil", "/etc/passwd")).unwrap_err();

        assert_eq!(
            up.to_string(),
            "symlink \"a/evil\" would point outside the repository (target \"../../etc\")"
        );
        assert!(matches!(abs, Refusal::SymlinkEscapes { .. }), "{abs:?}");
    }

    #[test]
    fn a_symlink_chain_that_climbs_out_is_refused() {
        let repo = TempRepo::new();
        // `top` is the repository root itself, so `top/..` is its parent.
        let patch = new_link("top", ".") + &new_link("up", "top/..");

        let err = check_str(repo.path(), &patch).unwrap_err();

        assert!(
            matches!(err, Refusal::SymlinkEscapes { ref path, .. } if path == "up"),
            "{err:?}"
        );
    }

    #[test]
    fn a_symlink_through_a_host_symlink_pointing_out_is_refused() {
        let repo = TempRepo::new();
        let outside = tempfile::tempdir().unwrap();
        repo.symlink(outside.path().to_str().unwrap(), "out");

        let err = check_str(repo.path(), &new_link("l", "out/file")).unwrap_err();

        assert!(matches!(err, Refusal::SymlinkEscapes { .. }), "{err:?}");
    }

    #[test]
    fn a_symlink_into_dot_git_is_refused() {
        let repo = TempRepo::new();

        let err = check_str(repo.path(), &new_link("hooks", ".git/hooks")).unwrap_err();

        assert!(matches!(err, Refusal::SymlinkIntoGit { .. }), "{err:?}");
    }

    #[test]
    fn renaming_a_symlink_where_its_target_escapes_is_refused() {
        let repo = TempRepo::new();
        fs_err::create_dir_all(repo.path().join("a/b")).unwrap();
        repo.symlink("../../x", "a/b/link");
        let patch = "diff --git a/a/b/link b/link\nsimilarity index 100%\nrename from a/b/link\nrename to link\n";

        let err = check_str(repo.path(), patch).unwrap_err();

        assert!(
            matches!(err, Refusal::SymlinkEscapes { ref path, .. } if path == "link"),
            "{err:?}"
        );
    }

    #[test]
    fn turning_a_file_into_a_symlink_by_mode_alone_checks_its_content() {
        let repo = TempRepo::new();
        repo.write("f", b"../../../etc/shadow");
        let patch = "diff --git a/f b/f\nold mode 100644\nnew mode 120000\n";

        let err = check_str(repo.path(), patch).unwrap_err();

        assert!(matches!(err, Refusal::SymlinkEscapes { .. }), "{err:?}");
    }

    #[test]
    fn a_partial_hunk_on_a_new_symlink_cannot_be_checked() {
        let repo = TempRepo::new();
        repo.write("f", b"line1\n");
        let patch = "diff --git a/f b/f\nold mode 100644\nnew mode 120000\n--- a/f\n+++ b/f\n\
                     @@ -0,0 +1 @@\n+ok\n";

        let err = check_str(repo.path(), patch).unwrap_err();

        assert!(matches!(err, Refusal::SymlinkUnchecked { .. }), "{err:?}");
    }

    #[test]
    fn a_symlink_mode_with_extra_bits_is_refused() {
        let repo = TempRepo::new();
        let patch = new_link("leak", "/etc/shadow").replace("120000", "120755");

        let err = check_str(repo.path(), &patch).unwrap_err();

        assert_eq!(
            err.to_string(),
            "path \"leak\" has file mode 120755; banger applies only 100644, 100755 and 120000"
        );
    }

    #[test]
    fn a_group_writable_file_mode_is_refused() {
        let repo = TempRepo::new();
        let patch = new_file("f").replace("100644", "100664");

        let err = check_str(repo.path(), &patch).unwrap_err();

        assert!(
            matches!(err, Refusal::Mode { mode: 0o100664, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_chain_of_doubling_symlinks_runs_out_of_budget() {
        let repo = TempRepo::new();
        // l1 -> l0/l0, l2 -> l1/l1, ...: resolving l20 alone takes 2^20 steps.
        let patch: String = std::iter::once(new_link("l0", "."))
            .chain((1..=20).map(|i| new_link(&format!("l{i}"), &format!("l{0}/l{0}", i - 1))))
            .collect();

        let err = check_str(repo.path(), &patch).unwrap_err();

        // The refusal is the budget's: without it, resolving would walk all 2^20 steps.
        assert!(matches!(err, Refusal::LinkBudget { .. }), "{err:?}");
    }

    #[test]
    fn submodule_entries_are_refused() {
        let repo = TempRepo::new();
        let patch = "diff --git a/sub b/sub\nnew file mode 160000\nindex 0000000..1111111\n--- /dev/null\n\
                     +++ b/sub\n@@ -0,0 +1 @@\n+Subproject commit 1111111111111111111111111111111111111111\n";

        let err = check_str(repo.path(), patch).unwrap_err();

        assert!(matches!(err, Refusal::Submodule { .. }), "{err:?}");
    }
}
