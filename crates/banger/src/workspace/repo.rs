//! The host side of a workspace: which repository, which commit, which files to ship.

use std::collections::{BTreeSet, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::error::WorkspaceError;
use super::exec::Stderr;

/// Git's file mode for a submodule (a "gitlink").
const GITLINK: &[u8] = b"160000";

/// A git working tree on the host.
#[derive(Debug, Clone)]
pub struct HostRepo {
    /// The top of the working tree.
    pub root: PathBuf,
    /// Where the given path sits below `root` (`""` or `sub/dir/`).
    pub prefix: String,
    /// The commit HEAD names; `None` before the first commit.
    pub head: Option<String>,
    /// The branch HEAD is on (`refs/heads/…`); `None` when detached.
    pub branch: Option<String>,
}

/// Runs `git -C dir args…` and returns its stdout.
pub fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>, WorkspaceError> {
    let out = git_command(dir, args)
        .output()
        .map_err(WorkspaceError::GitMissing)?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(WorkspaceError::Git {
            command: args.join(" "),
            dir: dir.to_path_buf(),
            stderr: Stderr::from_bytes(&out.stderr),
        })
    }
}

/// Settings that would let a repository's own configuration run a program, each
/// overridden for every host git banger runs: a repository copied out of a guest
/// must not get its `.git/config` executed.
const SAFE_CONFIG: &[(&str, &str)] = &[
    ("core.fsmonitor", "false"),
    ("core.hooksPath", "/dev/null"),
    ("core.sshCommand", "false"),
    ("core.pager", "cat"),
    ("credential.helper", ""),
    ("protocol.allow", "never"),
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
];

/// What a custom merge driver becomes: git's own text merge.
const TEXT_MERGE: &str = "git merge-file -L ours -L base -L theirs --marker-size=%L %A %O %B";

/// `git -C dir args…`, with output captured, no prompts, and none of the programs a
/// repository's configuration can name (fsmonitor, hooks, filter and merge drivers,
/// ssh, credential helpers, lazy fetches) run. Every host git goes through here.
pub fn git_command(dir: &Path, args: &[&str]) -> Command {
    let mut config: Vec<(OsString, OsString)> = SAFE_CONFIG
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect();
    config.extend(driver_overrides(dir));
    let mut cmd = hardened(dir, &config);
    cmd.args(args);
    cmd
}

/// `git -C dir` with `config` as command-line settings (through `GIT_CONFIG_COUNT`,
/// which, unlike `-c`, takes any subsection name as is).
fn hardened(dir: &Path, config: &[(OsString, OsString)]) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("--no-pager")
        .arg("-C")
        .arg(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_NO_LAZY_FETCH", "1")
        .env("GIT_PAGER", "cat")
        .env_remove("GIT_EXTERNAL_DIFF")
        .env("GIT_CONFIG_COUNT", config.len().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (i, (key, value)) in config.iter().enumerate() {
        cmd.env(format!("GIT_CONFIG_KEY_{i}"), key)
            .env(format!("GIT_CONFIG_VALUE_{i}"), value);
    }
    cmd
}

/// Settings that switch off every filter driver and replace every merge driver the
/// configuration seen from `dir` defines (reading configuration runs nothing).
fn driver_overrides(dir: &Path) -> Vec<(OsString, OsString)> {
    let safe: Vec<(OsString, OsString)> = SAFE_CONFIG
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect();
    let listed = hardened(dir, &safe)
        .args(["config", "-z", "--name-only", "--get-regexp"])
        .arg(r"^(filter|merge)\.")
        .output();
    let names = listed.map(|o| o.stdout).unwrap_or_default();
    let (mut filters, mut merges) = (BTreeSet::new(), BTreeSet::new());
    for name in names.split(|b| *b == 0) {
        let Some(dot) = name.iter().rposition(|b| *b == b'.') else {
            continue;
        };
        let (head, key) = (&name[..dot], &name[dot + 1..]);
        if let Some(driver) = head.strip_prefix(b"filter.") {
            filters.insert(driver.to_vec());
        } else if let (Some(driver), b"driver") = (head.strip_prefix(b"merge."), key) {
            merges.insert(driver.to_vec());
        }
    }
    let setting = |section: &str, driver: &[u8], key: &str, value: &str| {
        let mut name = format!("{section}.").into_bytes();
        name.extend_from_slice(driver);
        name.extend_from_slice(format!(".{key}").as_bytes());
        (OsString::from_vec(name), OsString::from(value))
    };
    let mut out = Vec::new();
    for driver in &filters {
        for key in ["clean", "smudge", "process"] {
            out.push(setting("filter", driver, key, ""));
        }
        out.push(setting("filter", driver, "required", "false"));
    }
    for driver in &merges {
        out.push(setting("merge", driver, "driver", TEXT_MERGE));
    }
    out
}

/// Like [`git`], but a plain "no" (exit code 1 with no stderr) is `None`.
fn git_maybe(dir: &Path, args: &[&str]) -> Result<Option<String>, WorkspaceError> {
    let out = git_command(dir, args)
        .output()
        .map_err(WorkspaceError::GitMissing)?;
    match out.status.code() {
        Some(0) => Ok(Some(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )),
        Some(1) if out.stderr.is_empty() => Ok(None),
        _ => Err(WorkspaceError::Git {
            command: args.join(" "),
            dir: dir.to_path_buf(),
            stderr: Stderr::from_bytes(&out.stderr),
        }),
    }
}

impl HostRepo {
    /// Finds the repository that holds `path`.
    pub fn open(path: &Path) -> Result<HostRepo, WorkspaceError> {
        let path = fs_err::canonicalize(path).map_err(|source| WorkspaceError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let out = git_command(
            &path,
            &["rev-parse", "--is-bare-repository", "--is-inside-work-tree"],
        )
        .output()
        .map_err(WorkspaceError::GitMissing)?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut flags = text.lines();
        match (out.status.success(), flags.next(), flags.next()) {
            (true, Some("true"), _) => return Err(WorkspaceError::BareRepo { path }),
            (true, _, Some("true")) => {}
            _ => return Err(WorkspaceError::NotARepo { path }),
        }
        let top = git(&path, &["rev-parse", "--show-toplevel"])?;
        let root = PathBuf::from(OsStr::from_bytes(trim_newline(&top)));
        let prefix =
            String::from_utf8_lossy(trim_newline(&git(&path, &["rev-parse", "--show-prefix"])?))
                .into_owned();
        let head = git_maybe(&root, &["rev-parse", "-q", "--verify", "HEAD^{commit}"])?;
        let branch = git_maybe(&root, &["symbolic-ref", "-q", "HEAD"])?;
        Ok(HostRepo {
            root,
            prefix,
            head,
            branch,
        })
    }
}

fn trim_newline(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\n").unwrap_or(b)
}

/// What a shipped path is on the host right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Symlink,
}

/// One path to ship, relative to the repository root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipEntry {
    pub path: PathBuf,
    pub kind: Kind,
}

/// Everything a workspace ship needs from the host repository.
#[derive(Debug)]
pub struct Manifest {
    /// `git ls-files -s -z`: the index, replayed in the guest.
    pub index: Vec<u8>,
    /// The files and symlinks to put in the guest's working tree, in order.
    pub entries: Vec<ShipEntry>,
    /// Untracked paths that were skipped (nested repositories), for a note.
    pub skipped: Vec<PathBuf>,
    /// NUL-separated paths whose working-tree state differs from the index (modified,
    /// deleted, untracked and shipped): all the guest must hash to record the shipped
    /// tree, instead of every file.
    pub changed: Vec<u8>,
}

impl Manifest {
    /// Tracked files as they are in the working tree (deleted ones left out), plus
    /// untracked non-ignored files when `include_untracked`.
    pub fn collect(repo: &HostRepo, include_untracked: bool) -> Result<Manifest, WorkspaceError> {
        let index = git(&repo.root, &["ls-files", "-s", "-z"])?;
        let tracked = tracked_paths(repo, &index)?;
        // Modified and deleted as git sees them (stat data first, so this is quick).
        let mut changed = git(
            &repo.root,
            &[
                "diff-files",
                "--no-ext-diff",
                "--no-textconv",
                "--name-only",
                "-z",
            ],
        )?;
        let mut walker = Walker::new(&repo.root);
        let mut entries = Vec::new();
        for path in tracked {
            match walker.entry(path)? {
                Some(entry) => entries.push(entry),
                None => push_path(&mut changed, path),
            }
        }
        let mut skipped = Vec::new();
        if include_untracked {
            let others = git(
                &repo.root,
                &["ls-files", "-z", "--others", "--exclude-standard"],
            )?;
            for path in others.split(|b| *b == 0).filter(|p| !p.is_empty()) {
                if path.ends_with(b"/") {
                    skipped.push(PathBuf::from(OsStr::from_bytes(path)));
                } else if let Some(entry) = walker.entry(path)? {
                    push_path(&mut changed, path);
                    entries.push(entry);
                }
            }
        }
        Ok(Manifest {
            index,
            entries,
            skipped,
            changed,
        })
    }
}

impl HostRepo {
    /// Refuses a repository with submodules, before anything is set up for it.
    pub fn check_shippable(&self) -> Result<(), WorkspaceError> {
        tracked_paths(self, &git(&self.root, &["ls-files", "-s", "-z"])?).map(|_| ())
    }
}

/// The distinct paths of `git ls-files -s -z` output; an error naming the submodules
/// if there are any.
fn tracked_paths<'a>(repo: &HostRepo, index: &'a [u8]) -> Result<Vec<&'a [u8]>, WorkspaceError> {
    let mut tracked: Vec<&[u8]> = Vec::new();
    let mut submodules = Vec::new();
    for record in index.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        // "<mode> <sha> <stage>\t<path>"
        let Some(tab) = record.iter().position(|b| *b == b'\t') else {
            continue;
        };
        let (meta, path) = (&record[..tab], &record[tab + 1..]);
        if meta.starts_with(GITLINK) {
            submodules.push(String::from_utf8_lossy(path).into_owned());
        } else if tracked.last() != Some(&path) {
            tracked.push(path);
        }
    }
    if !submodules.is_empty() {
        return Err(WorkspaceError::Submodules {
            repo: repo.root.clone(),
            paths: submodules,
        });
    }
    Ok(tracked)
}

fn push_path(list: &mut Vec<u8>, path: &[u8]) {
    list.extend_from_slice(path);
    list.push(0);
}

/// Classifies working-tree paths, remembering which directories were checked.
struct Walker<'a> {
    root: &'a Path,
    real_dirs: HashSet<PathBuf>,
}

impl<'a> Walker<'a> {
    fn new(root: &'a Path) -> Walker<'a> {
        Walker {
            root,
            real_dirs: HashSet::new(),
        }
    }

    /// `None` when the path is gone, is not a file or symlink, or sits below a symlink
    /// or non-directory (git then sees it as deleted too).
    fn entry(&mut self, path: &[u8]) -> Result<Option<ShipEntry>, WorkspaceError> {
        let rel = PathBuf::from(OsStr::from_bytes(path));
        if let Some(parent) = rel.parent() {
            if !self.real_dir(parent)? {
                return Ok(None);
            }
        }
        let kind = match lstat(&self.root.join(&rel))? {
            Some(m) if m.file_type().is_file() => Kind::File,
            Some(m) if m.file_type().is_symlink() => Kind::Symlink,
            _ => return Ok(None),
        };
        Ok(Some(ShipEntry { path: rel, kind }))
    }

    fn real_dir(&mut self, dir: &Path) -> Result<bool, WorkspaceError> {
        if dir.as_os_str().is_empty() || self.real_dirs.contains(dir) {
            return Ok(true);
        }
        if let Some(parent) = dir.parent() {
            if !self.real_dir(parent)? {
                return Ok(false);
            }
        }
        let is_dir = lstat(&self.root.join(dir))?.is_some_and(|m| m.file_type().is_dir());
        if is_dir {
            self.real_dirs.insert(dir.to_path_buf());
        }
        Ok(is_dir)
    }
}

/// `lstat`, with "not there" as `None`.
pub fn lstat(path: &Path) -> Result<Option<std::fs::Metadata>, WorkspaceError> {
    match fs_err::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(WorkspaceError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::workspace::testkit::{write_script, TempRepo};

    #[test]
    fn submodules_are_refused_by_name() {
        let repo = TempRepo::new();
        repo.write("f", b"f\n");
        repo.git(&["add", "f"]);
        repo.git(&["commit", "-qm", "c"]);
        let head = String::from_utf8(repo.git(&["rev-parse", "HEAD"])).unwrap();
        let cacheinfo = format!("160000,{},vendor/lib", head.trim());
        repo.git(&["update-index", "--add", "--cacheinfo", &cacheinfo]);

        let err = HostRepo::open(repo.path())
            .unwrap()
            .check_shippable()
            .unwrap_err();

        assert_eq!(
            err.to_string(),
            format!(
                "{} has submodules, which banger does not ship: vendor/lib",
                repo.path().canonicalize().unwrap().display()
            )
        );
    }

    #[test]
    fn a_subdirectory_opens_its_repository_with_a_prefix() {
        let repo = TempRepo::new();
        repo.write("sub/dir/f", b"f\n");

        let opened = HostRepo::open(&repo.path().join("sub/dir")).unwrap();

        assert_eq!(opened.root, repo.path().canonicalize().unwrap());
        assert_eq!(opened.prefix, "sub/dir/");
        assert_eq!(opened.head, None);
        assert_eq!(opened.branch.as_deref(), Some("refs/heads/main"));
    }

    #[test]
    fn the_repository_config_runs_no_program_on_the_host() {
        let repo = TempRepo::new();
        let tools = tempfile::tempdir().unwrap();
        let marker = tools.path().join("ran");
        let script = tools.path().join("evil");
        write_script(
            &script,
            &format!("#!/bin/sh\necho \"$0 $*\" >> '{}'\ncat\n", marker.display()),
        );
        repo.write("f", b"one\n");
        repo.write(".gitattributes", b"* filter=evil merge=evil\n");
        repo.git(&["add", "-A"]);
        repo.git(&["commit", "-qm", "c"]);
        let evil = script.to_str().unwrap();
        repo.git(&["config", "core.fsmonitor", evil]);
        repo.git(&["config", "filter.evil.clean", evil]);
        repo.git(&["config", "filter.evil.smudge", evil]);
        repo.git(&["config", "merge.evil.driver", evil]);
        repo.write("f", b"two\n");

        let opened = HostRepo::open(repo.path()).unwrap();
        let manifest = Manifest::collect(&opened, true).unwrap();

        assert!(!manifest.changed.is_empty());
        assert!(
            !marker.exists(),
            "{}",
            fs_err::read_to_string(&marker).unwrap()
        );
    }

    #[test]
    fn a_plain_directory_is_not_a_repository() {
        let dir = tempfile::tempdir().unwrap();

        let err = HostRepo::open(dir.path()).unwrap_err();

        assert!(matches!(err, WorkspaceError::NotARepo { .. }), "{err:?}");
    }

    #[test]
    fn files_below_a_symlinked_directory_are_not_followed() {
        let repo = TempRepo::new();
        let outside = tempfile::tempdir().unwrap();
        fs_err::write(outside.path().join("secret"), b"s").unwrap();
        repo.write("d/secret", b"tracked\n");
        repo.git(&["add", "-A"]);
        fs_err::remove_dir_all(repo.path().join("d")).unwrap();
        repo.symlink(outside.path().to_str().unwrap(), "d");

        let manifest = Manifest::collect(&HostRepo::open(repo.path()).unwrap(), false).unwrap();

        assert_eq!(manifest.entries, vec![]);
    }
}
