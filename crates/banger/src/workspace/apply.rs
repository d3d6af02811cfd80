//! Applying a patch from the guest to the host working tree, safely:
//!
//! 1. banger's own strict parse and path/symlink checks ([`super::guard`]);
//! 2. `git apply --numstat` must name no path the check did not see, and the modes
//!    `git apply --summary` reports must be the ones the check saw (git and banger
//!    read the same patch the same way);
//! 3. `git apply --check`, then `git apply` (working tree only);
//! 4. if that does not apply, `git apply --3way`, with new objects kept in a temporary
//!    object directory that joins the repository only if the merge went through.
//!
//! `git apply` is all-or-nothing, so a refused or failed apply leaves the repository
//! byte for byte as it was.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::error::WorkspaceError;
use super::exec::Stderr;
use super::guard;
use super::patch::{self, show, FilePatch, Refusal, ALLOWED_MODES};
use super::repo::{git, git_command};

/// How an apply ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Every file applied (`three_way`: only after a 3-way merge).
    Clean { files: usize, three_way: bool },
    /// Applied with conflict markers in these files (and unmerged index entries).
    Conflicts { paths: Vec<String> },
}

/// Validates `patch_file` against the repository at `root` and applies it.
pub fn apply(root: &Path, patch_file: &Path, vm: &str) -> Result<Applied, WorkspaceError> {
    let refused = |refusal| WorkspaceError::Refused {
        vm: vm.into(),
        refusal,
    };
    let sections = validate(root, patch_file).map_err(refused)?;
    if sections == 0 {
        return Ok(Applied::Clean {
            files: 0,
            three_way: false,
        });
    }
    let patch_arg = patch_file.as_os_str();
    let check = git_command(root, &["apply", "--check", "--whitespace=nowarn"])
        .arg(patch_arg)
        .output()
        .map_err(WorkspaceError::GitMissing)?;
    if check.status.success() {
        let mut cmd = git_command(root, &["apply", "--whitespace=nowarn"]);
        run(cmd.arg(patch_arg), root, "apply")?;
        return Ok(Applied::Clean {
            files: sections,
            three_way: false,
        });
    }
    three_way(root, patch_file, sections, vm)
}

/// Parses and checks the patch; returns how many files it changes.
pub fn validate(root: &Path, patch_file: &Path) -> Result<usize, Refusal> {
    let file = fs_err::File::open(patch_file)?;
    let sections = patch::parse(std::io::BufReader::new(file))?;
    guard::check(root, &sections)?;
    if !sections.is_empty() {
        same_reading(root, patch_file, &sections)?;
        same_modes(root, patch_file, &sections)?;
    }
    Ok(sections.len())
}

/// Refuses the patch if git would touch a path banger's parse did not see.
fn same_reading(root: &Path, patch_file: &Path, sections: &[FilePatch]) -> Result<(), Refusal> {
    let out = git_command(root, &["apply", "--numstat", "-z"])
        .arg(patch_file)
        .output()?;
    if !out.status.success() {
        return Err(Refusal::Malformed {
            line: 0,
            what: format!("git cannot read it: {}", Stderr::from_bytes(&out.stderr)),
        });
    }
    let known: HashSet<&[u8]> = sections
        .iter()
        .flat_map(|s| s.paths.iter().map(Vec::as_slice))
        .collect();
    // Records: "added\tdeleted\tpath\0", or "added\tdeleted\t\0old\0new\0" for renames.
    let mut fields = out.stdout.split(|b| *b == 0).peekable();
    let mut files = 0;
    while let Some(record) = fields.next() {
        if record.is_empty() && fields.peek().is_none() {
            break;
        }
        files += 1;
        let mut cols = record.splitn(3, |b| *b == b'\t');
        let path = cols.nth(2).unwrap_or_default();
        let named: Vec<&[u8]> = if path.is_empty() {
            vec![
                fields.next().unwrap_or_default(),
                fields.next().unwrap_or_default(),
            ]
        } else {
            vec![path]
        };
        if let Some(unseen) = named.into_iter().find(|p| !known.contains(p)) {
            return Err(Refusal::Differential { path: show(unseen) });
        }
    }
    if files != sections.len() {
        return Err(Refusal::Differential {
            path: format!("{files} files, banger saw {}", sections.len()),
        });
    }
    Ok(())
}

/// Refuses the patch unless every mode `git apply --summary` reports is allowed and
/// is the one banger's check saw for that path.
fn same_modes(root: &Path, patch_file: &Path, sections: &[FilePatch]) -> Result<(), Refusal> {
    let out = git_command(root, &["apply", "--summary"])
        .arg(patch_file)
        .output()?;
    if !out.status.success() {
        return Err(Refusal::Malformed {
            line: 0,
            what: format!("git cannot read it: {}", Stderr::from_bytes(&out.stderr)),
        });
    }
    for line in out.stdout.split(|b| *b == b'\n') {
        let line = line.strip_prefix(b" ").unwrap_or(line);
        // " create mode 120000 name", " delete mode 100644 name",
        // " mode change 100644 => 100755 name" (no name after a rename).
        let (old, new, rest) = if let Some(rest) = line.strip_prefix(b"create mode ") {
            (None, summary_mode(rest)?, &rest[6..])
        } else if let Some(rest) = line.strip_prefix(b"delete mode ") {
            (summary_mode(rest)?, None, &rest[6..])
        } else if let Some(rest) = line.strip_prefix(b"mode change ") {
            let new = rest.get(10..).unwrap_or_default();
            let arrow = rest.get(6..10) == Some(b" => ");
            if !arrow {
                return Err(Refusal::Differential { path: show(line) });
            }
            (summary_mode(rest)?, summary_mode(new)?, &new[6..])
        } else {
            continue;
        };
        let name = rest.strip_prefix(b" ").unwrap_or_default();
        let agrees = |fp: &FilePatch| {
            let path = if new.is_some() {
                &fp.new_path
            } else {
                &fp.old_path
            };
            let modes =
                (old.is_none() || fp.old_mode == old) && (new.is_none() || fp.new_mode == new);
            modes && (name.is_empty() || path.as_deref() == Some(name))
        };
        if !sections.iter().any(agrees) {
            return Err(Refusal::Differential { path: show(line) });
        }
    }
    Ok(())
}

/// The six-digit octal mode that starts `text`; an allowed one, or a refusal.
fn summary_mode(text: &[u8]) -> Result<Option<u32>, Refusal> {
    let digits = text.get(..6).and_then(|d| std::str::from_utf8(d).ok());
    let mode = digits.and_then(|d| u32::from_str_radix(d, 8).ok());
    match mode {
        Some(mode) if ALLOWED_MODES.contains(&mode) => Ok(Some(mode)),
        Some(mode) => Err(Refusal::Mode {
            path: show(text.get(7..).unwrap_or_default()),
            mode,
        }),
        None => Err(Refusal::Differential { path: show(text) }),
    }
}

fn three_way(
    root: &Path,
    patch_file: &Path,
    sections: usize,
    vm: &str,
) -> Result<Applied, WorkspaceError> {
    let objects = PathBuf::from(OsStr::from_bytes(trim(&git(
        root,
        &[
            "rev-parse",
            "--path-format=absolute",
            "--git-path",
            "objects",
        ],
    )?)));
    let scratch = tempfile::Builder::new()
        .prefix("banger-apply-objects")
        .tempdir()
        .map_err(|source| WorkspaceError::Write {
            path: std::env::temp_dir(),
            source,
        })?;
    let out = git_command(root, &["apply", "--3way", "--whitespace=nowarn"])
        .arg(patch_file)
        .env("GIT_OBJECT_DIRECTORY", scratch.path())
        .env("GIT_ALTERNATE_OBJECT_DIRECTORIES", &objects)
        .output()
        .map_err(WorkspaceError::GitMissing)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let conflicts: Vec<String> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("U "))
        .map(str::to_string)
        .collect();
    if !out.status.success() && conflicts.is_empty() {
        return Err(WorkspaceError::DoesNotApply {
            vm: vm.into(),
            repo: root.to_path_buf(),
            stderr: Stderr::from_bytes(&out.stderr),
        });
    }
    adopt_objects(scratch.path(), &objects)?;
    Ok(if conflicts.is_empty() {
        Applied::Clean {
            files: sections,
            three_way: true,
        }
    } else {
        Applied::Conflicts { paths: conflicts }
    })
}

/// Moves loose objects written during the 3-way merge into the repository.
fn adopt_objects(from: &Path, objects: &Path) -> Result<(), WorkspaceError> {
    let read = |path: &Path| {
        fs_err::read_dir(path).map_err(|source| WorkspaceError::Read {
            path: path.into(),
            source,
        })
    };
    for fan in read(from)? {
        let fan = fan.map_err(|source| WorkspaceError::Read {
            path: from.into(),
            source,
        })?;
        if !fan.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let into = objects.join(fan.file_name());
        for object in read(&fan.path())? {
            let object = object.map_err(|source| WorkspaceError::Read {
                path: fan.path(),
                source,
            })?;
            let target = into.join(object.file_name());
            if target.exists() {
                continue;
            }
            let werr = |source| WorkspaceError::Write {
                path: target.clone(),
                source,
            };
            fs_err::create_dir_all(&into).map_err(werr)?;
            fs_err::copy(object.path(), &target).map_err(werr)?;
        }
    }
    Ok(())
}

fn run(cmd: &mut std::process::Command, root: &Path, what: &str) -> Result<(), WorkspaceError> {
    let out = cmd.output().map_err(WorkspaceError::GitMissing)?;
    if out.status.success() {
        return Ok(());
    }
    Err(WorkspaceError::Git {
        command: what.into(),
        dir: root.to_path_buf(),
        stderr: Stderr::from_bytes(&out.stderr),
    })
}

fn trim(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\n").unwrap_or(b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::workspace::testkit::{tree, TempRepo};

    fn committed_repo() -> TempRepo {
        let repo = TempRepo::new();
        repo.write("f", b"l1\nl2\nl3\n");
        repo.git(&["add", "f"]);
        repo.git(&["commit", "-qm", "c"]);
        repo.write("f", b"l1\nl2\nl3\nuncommitted\n");
        repo
    }

    fn patch_file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        fs_err::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn a_traversal_patch_is_refused_and_nothing_changes() {
        let parent = tempfile::tempdir().unwrap();
        let repo = committed_repo();
        let before = tree(repo.path(), true);
        let patch = patch_file(&format!(
            "diff --git a/../{name}/x b/../{name}/x\nnew file mode 100644\n--- /dev/null\n+++ b/../{name}/x\n\
             @@ -0,0 +1 @@\n+owned\n",
            name = parent.path().file_name().unwrap().to_str().unwrap()
        ));

        let err = apply(repo.path(), patch.path(), "vm1").unwrap_err();

        assert!(
            matches!(
                err,
                WorkspaceError::Refused {
                    refusal: Refusal::DotDot { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(tree(repo.path(), true), before);
        assert_eq!(fs_err::read_dir(parent.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_symlink_with_mode_120755_is_refused_and_plants_nothing() {
        let repo = committed_repo();
        let before = tree(repo.path(), true);
        let patch = patch_file(
            "diff --git a/leak b/leak\nnew file mode 120755\n--- /dev/null\n+++ b/leak\n\
             @@ -0,0 +1 @@\n+/etc/shadow\n\\ No newline at end of file\n",
        );

        let err = apply(repo.path(), patch.path(), "vm1").unwrap_err();

        assert!(
            matches!(
                err,
                WorkspaceError::Refused {
                    refusal: Refusal::Mode { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(tree(repo.path(), true), before);
        assert!(fs_err::symlink_metadata(repo.path().join("leak")).is_err());
    }

    #[test]
    fn a_patch_line_over_the_limit_is_refused_and_nothing_changes() {
        let repo = committed_repo();
        let before = tree(repo.path(), true);
        let long = "x".repeat(patch::MAX_PATCH_LINE + 1);
        let patch = patch_file(&format!(
            "diff --git a/big b/big\nnew file mode 100644\n--- /dev/null\n+++ b/big\n\
             @@ -0,0 +1 @@\n+{long}\n"
        ));

        let err = apply(repo.path(), patch.path(), "vm1").unwrap_err();

        assert!(
            matches!(
                err,
                WorkspaceError::Refused {
                    refusal: Refusal::LineTooLong { line: 6, .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(tree(repo.path(), true), before);
    }

    #[test]
    fn git_creating_another_mode_than_banger_saw_is_refused() {
        let repo = committed_repo();
        let seen = patch::parse(&b"diff --git a/a b/a\nnew file mode 100644\n--- /dev/null\n+++ b/a\n@@ -0,0 +1 @@\n+x\n"[..]).unwrap();
        let other = patch_file(
            "diff --git a/a b/a\nnew file mode 120000\n--- /dev/null\n+++ b/a\n@@ -0,0 +1 @@\n+x\n",
        );

        let err = same_modes(repo.path(), other.path(), &seen).unwrap_err();

        assert!(
            matches!(err, Refusal::Differential { ref path } if path == "create mode 120000 a"),
            "{err:?}"
        );
    }

    #[test]
    fn a_symlink_then_write_through_it_is_refused_and_nothing_changes() {
        let outside = tempfile::tempdir().unwrap();
        let repo = committed_repo();
        let before = tree(repo.path(), true);
        let target = outside.path().to_str().unwrap();
        let patch = patch_file(&format!(
            "diff --git a/d b/d\nnew file mode 120000\n--- /dev/null\n+++ b/d\n@@ -0,0 +1 @@\n+{target}\n\
             \\ No newline at end of file\n\
             diff --git a/d/x b/d/x\nnew file mode 100644\n--- /dev/null\n+++ b/d/x\n@@ -0,0 +1 @@\n+owned\n"
        ));

        let err = apply(repo.path(), patch.path(), "vm1").unwrap_err();

        assert!(matches!(err, WorkspaceError::Refused { .. }), "{err:?}");
        assert_eq!(tree(repo.path(), true), before);
        assert_eq!(fs_err::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_patch_that_does_not_apply_leaves_everything_including_objects_alone() {
        let repo = TempRepo::new();
        repo.write("f", b"l1\nl2\nl3\n");
        repo.git(&["add", "f"]);
        repo.git(&["commit", "-qm", "c"]);
        repo.write("f", b"l1\nguest\nl3\n");
        let diff = String::from_utf8(repo.git(&["diff", "--full-index"])).unwrap();
        repo.write("f", b"l1\nhost\nl3\n");
        repo.git(&["add", "f"]);
        let before = tree(repo.path(), true);
        // `f` merges (git writes the merged blob) but `g` cannot apply at all.
        let patch = patch_file(&format!(
            "{diff}diff --git a/g b/g\n\
             index 1111111111111111111111111111111111111111..2222222222222222222222222222222222222222 100644\n\
             --- a/g\n+++ b/g\n@@ -1,2 +1,2 @@\n nothing\n-like this\n+at all\n"
        ));

        let err = apply(repo.path(), patch.path(), "vm1").unwrap_err();

        assert!(
            matches!(err, WorkspaceError::DoesNotApply { .. }),
            "{err:?}"
        );
        assert_eq!(tree(repo.path(), true), before);
    }

    #[test]
    fn a_clashing_edit_falls_back_to_a_three_way_merge_with_conflicts() {
        let repo = TempRepo::new();
        repo.write("f", b"l1\nl2\nl3\n");
        repo.git(&["add", "f"]);
        repo.git(&["commit", "-qm", "c"]);
        repo.write("f", b"l1\nguest\nl3\n");
        let diff = String::from_utf8(repo.git(&["diff", "--full-index"])).unwrap();
        repo.write("f", b"l1\nhost\nl3\n");
        repo.git(&["add", "f"]);
        let patch = patch_file(&diff);

        let applied = apply(repo.path(), patch.path(), "vm1").unwrap();

        assert_eq!(
            applied,
            Applied::Conflicts {
                paths: vec!["f".into()]
            }
        );
        let merged = fs_err::read_to_string(repo.path().join("f")).unwrap();
        assert!(
            merged.contains("<<<<<<<") && merged.contains("guest") && merged.contains("host"),
            "{merged}"
        );
        // The merge's objects joined the repository: the unmerged index is whole.
        repo.git(&["fsck", "--no-dangling"]);
    }

    #[test]
    fn git_reading_another_path_than_banger_is_refused() {
        let repo = committed_repo();
        let seen = patch::parse(&b"diff --git a/a b/a\nnew file mode 100644\n--- /dev/null\n+++ b/a\n@@ -0,0 +1 @@\n+x\n"[..]).unwrap();
        let other = patch_file(
            "diff --git a/b b/b\nnew file mode 100644\n--- /dev/null\n+++ b/b\n@@ -0,0 +1 @@\n+x\n",
        );

        let err = same_reading(repo.path(), other.path(), &seen).unwrap_err();

        assert!(
            matches!(err, Refusal::Differential { ref path } if path == "b"),
            "{err:?}"
        );
    }
}
