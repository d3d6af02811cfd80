//! Shipping a host working tree into a guest directory as one tar stream into one
//! guest command ([`SHIP`]): each guest process costs tens of milliseconds under
//! emulation, a git process more, so the host makes the whole repository and the guest
//! only unpacks it.
//!
//! The host builds the guest's `.git` in a private temp dir (the host repository is
//! only read; objects git has to write go to a scratch object directory that borrows
//! the host's as an alternate):
//! * `objects/pack`: `git pack-objects --revs --indexed-objects --stdout` (HEAD's
//!   commit and tree, or its whole history with [`ShipOptions::history`], plus every
//!   object the index and the shipped tree name) and `git index-pack -o` write a pack
//!   and its index, so the guest does no hashing or inflating. Without history the
//!   repository is shallow: `shallow` names HEAD, as after `git clone --depth 1`;
//! * `index`: the host index replayed (`ls-files -s` into `update-index --index-info`),
//!   so staged and unstaged changes look the same as on the host;
//! * `HEAD`, the branch, `config`, and two refs: `refs/banger/base` (the shipped HEAD)
//!   and `refs/banger/shipped` (a tree of the working tree as shipped).
//!
//! These go first in the tar, then the working-tree files. When the working tree
//! differs from the index, the host lists the paths that differ ([`CHANGED`]) and the
//! guest hashes just those to record `refs/banger/shipped` (two git processes), so the
//! tree names exactly the bytes the guest got; a clean tree costs the guest no git at
//! all.
//!
//! The replayed index has no stat data, so the guest's first `git status` rehashes the
//! files once (about a second per 10,000 files under emulation) and keeps the result.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use banger_wire::agent::ExecSpec;
use banger_wire::workspace::{NOT_EMPTY, NO_GIT, NO_TAR};
use tokio::io::{AsyncRead, AsyncWriteExt};

use super::error::WorkspaceError;
use super::exec::{self, CaptureError, Captured, GuestFailed, Runner, Stderr};
use super::repo::{HostRepo, Kind, Manifest, ShipEntry};
use super::tarball::{self, Prelude, Tree};

/// Where the tar puts the host's list of changed paths (inside the guest's `.git`).
pub const CHANGED: &str = ".git/banger-changed";

/// `$1` the destination; the workspace's tar on stdin. Checks the guest has what the
/// workspace needs and that the destination is empty, unpacks, and records the shipped
/// tree when the host listed changed paths (see the module's text).
const SHIP: &str = r#"set -eu
command -v git >/dev/null 2>&1 || exit 101
command -v tar >/dev/null 2>&1 || exit 102
d=$1
if [ -e "$d" ] && [ -n "$(ls -A "$d" 2>/dev/null)" ]; then exit 103; fi
mkdir -p "$d/.git/refs/heads" "$d/.git/refs/tags" "$d/.git/refs/banger"
tar -x --no-same-owner -C "$d"
cd "$d"
[ -e .git/banger-changed ] || exit 0
snap=.git/banger-shipped.index
trap 'rm -f "$snap" .git/banger-changed' EXIT
cp .git/index "$snap"
GIT_INDEX_FILE=$snap git update-index -z --add --remove --stdin <.git/banger-changed
GIT_INDEX_FILE=$snap git write-tree >.git/refs/banger/shipped
"#;

/// Settings for the index the guest gets: a format any git since 2.x reads, and no
/// files beside it (a split index keeps part of itself in the repository).
const PORTABLE_INDEX: &[&str] = &[
    "-c",
    "index.version=2",
    "-c",
    "index.skipHash=false",
    "-c",
    "index.sparse=false",
    "-c",
    "core.splitIndex=false",
    "-c",
    "core.untrackedCache=false",
];

/// What to ship and where.
#[derive(Debug, Clone)]
pub struct ShipOptions {
    pub include_untracked: bool,
    /// Absolute directory in the guest.
    pub dest: String,
    /// Ship HEAD's whole history instead of HEAD's commit alone (a shallow repository).
    pub history: bool,
}

/// What a ship did.
#[derive(Debug)]
pub struct Shipped {
    pub files: usize,
    /// Nested repositories left out of `--include-untracked`.
    pub skipped: Vec<PathBuf>,
}

/// A workspace shipped into a VM, and where to work in it.
#[derive(Debug)]
pub struct Prepared {
    pub shipped: Shipped,
    /// The guest directory the repository's top landed in.
    pub dest: String,
    /// The guest directory that matches the host path shipped (the repository's top, or
    /// the subdirectory of it that was named): where a command should start.
    pub workdir: String,
}

/// Where a workspace may go in the guest: absolute, no `..`, not `/` itself.
pub fn check_dest(dest: &str) -> Result<(), WorkspaceError> {
    let path = Path::new(dest);
    let reason = if !path.is_absolute() {
        "is not an absolute path"
    } else if path
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        "contains `..`"
    } else if path.parent().is_none() {
        "is the root directory"
    } else {
        return Ok(());
    };
    Err(WorkspaceError::BadDest {
        dest: dest.into(),
        reason,
    })
}

/// Checks `opts.dest`, ships `repo` into `guest` there and says where it landed.
pub async fn prepare(
    guest: &impl Runner,
    repo: &HostRepo,
    opts: &ShipOptions,
) -> Result<Prepared, WorkspaceError> {
    check_dest(&opts.dest)?;
    let shipped = ship(guest, repo, opts).await?;
    let dest = opts.dest.trim_end_matches('/').to_string();
    let workdir = format!("{dest}/{}", repo.prefix)
        .trim_end_matches('/')
        .to_string();
    Ok(Prepared {
        shipped,
        dest,
        workdir,
    })
}

fn script(name: &str, body: &str, args: &[&str]) -> ExecSpec {
    let mut argv = vec!["sh", "-c", body, name];
    argv.extend_from_slice(args);
    exec::spec(&argv)
}

/// Ships the working tree of `repo` into `guest` at `opts.dest`.
pub async fn ship(
    guest: &impl Runner,
    repo: &HostRepo,
    opts: &ShipOptions,
) -> Result<Shipped, WorkspaceError> {
    let vm = guest.name();
    let mut manifest = Manifest::collect(repo, opts.include_untracked)?;
    let dest = opts.dest.as_str();
    let shipped_files = manifest.entries.len();
    let files = Tree {
        root: repo.root.clone(),
        under: PathBuf::new(),
        entries: std::mem::take(&mut manifest.entries),
    };
    // The files go first and `.git` last: the host makes it while the files travel.
    let (made_tx, made_rx) = tokio::sync::oneshot::channel::<GitDir>();
    let (tar, builder) = tarball::stream(move |tar| {
        tar.tree(&files)?;
        let git_dir = made_rx.blocking_recv().map_err(|_| WorkspaceError::Write {
            path: "<tar stream>".into(),
            source: std::io::Error::other("the repository's .git was not made"),
        })?;
        tar.prelude(&git_dir.prelude)?;
        tar.tree(&git_dir.pack)
    });
    let spec = script("banger-ws-ship", SHIP, &[dest]);
    let making = async {
        let git_dir = GitDir::build(repo, &manifest, opts.history).await?;
        // Gone only when the tar stream already failed, which says why.
        let _ = made_tx.send(git_dir);
        Ok::<_, WorkspaceError>(())
    };
    let (made, sent) = tokio::join!(making, step(guest, "unpacking the workspace", spec, tar));
    let built = builder.await.map_err(|e| WorkspaceError::Write {
        path: "<tar stream>".into(),
        source: e.into(),
    })?;
    made?;
    match (sent, built) {
        // A failed build fails the stream too; the build's own error says why.
        (Err(WorkspaceError::Stream { .. }), Err(e)) | (Ok(()), Err(e)) => Err(e),
        (Err(WorkspaceError::Guest(GuestFailed { code: NO_GIT, .. })), _) => {
            Err(WorkspaceError::GuestToolMissing {
                vm: vm.into(),
                tool: "git",
            })
        }
        (Err(WorkspaceError::Guest(GuestFailed { code: NO_TAR, .. })), _) => {
            Err(WorkspaceError::GuestToolMissing {
                vm: vm.into(),
                tool: "tar",
            })
        }
        (
            Err(WorkspaceError::Guest(GuestFailed {
                code: NOT_EMPTY, ..
            })),
            _,
        ) => Err(WorkspaceError::DestNotEmpty {
            vm: vm.into(),
            dest: dest.into(),
        }),
        (sent, _) => sent,
    }?;
    Ok(Shipped {
        files: shipped_files,
        skipped: manifest.skipped,
    })
}

/// The guest's `.git`, made on the host: small files as tar preludes, and the pack in
/// a private temp dir that goes away when this is dropped.
struct GitDir {
    prelude: Vec<Prelude>,
    pack: Tree,
    _scratch: tempfile::TempDir,
}

impl GitDir {
    async fn build(
        repo: &HostRepo,
        manifest: &Manifest,
        history: bool,
    ) -> Result<GitDir, WorkspaceError> {
        let scratch = tempfile::Builder::new()
            .prefix("banger-ship.")
            .tempdir()
            .map_err(|source| WorkspaceError::Write {
                path: std::env::temp_dir(),
                source,
            })?;
        let objects = scratch.path().join("objects");
        let pack_dir = scratch.path().join("pack");
        // pack-objects writes its temporary files into the object directory's `pack`.
        for dir in [&objects.join("pack"), &pack_dir] {
            fs_err::create_dir_all(dir).map_err(|source| WorkspaceError::Write {
                path: dir.clone(),
                source,
            })?;
        }
        let git = Git::new(repo, &objects).await?;

        let index = scratch.path().join("index");
        let mut args = PORTABLE_INDEX.to_vec();
        args.extend(["update-index", "-z", "--index-info"]);
        let replay = Some(manifest.index.as_slice());
        git.run(&args, Objects::Scratch, Some(&index), replay, Stdio::null())
            .await?;
        // A clean tree's shipped tree is the index's; a dirty one the guest hashes. The
        // index's blobs are the repository's, out of the scratch directory's sight.
        let shipped = if manifest.changed.is_empty() {
            let args = ["write-tree", "--missing-ok"];
            let tree = git
                .run(&args, Objects::Scratch, Some(&index), None, Stdio::piped())
                .await?;
            Some(String::from_utf8_lossy(&tree).trim().to_string())
        } else {
            None
        };

        let head = repo.head.as_deref();
        let mut revs = pack_revs(head, history);
        if let Some(tree) = &shipped {
            revs.push_str(&format!("{tree}\n"));
        }
        let pack = pack(&git, &revs, &pack_dir).await?;

        let mut files = vec![
            (".git/config", git_config(&git.format)),
            (".git/HEAD", head_file(head, repo.branch.as_deref())),
        ];
        let mut refs = Vec::new();
        if let Some(head) = head {
            refs.push(("refs/banger/base".to_string(), head));
            if let Some(branch) = &repo.branch {
                refs.push((branch.clone(), head));
            }
            if !history {
                files.push((".git/shallow", format!("{head}\n")));
            }
        }
        if let Some(tree) = &shipped {
            refs.push(("refs/banger/shipped".to_string(), tree.as_str()));
        }
        let mut prelude: Vec<Prelude> = files
            .into_iter()
            .map(|(path, data)| Prelude {
                path: path.into(),
                data: data.into_bytes(),
            })
            .collect();
        prelude.extend(refs.into_iter().map(|(name, id)| Prelude {
            path: Path::new(".git").join(name),
            data: format!("{id}\n").into_bytes(),
        }));
        prelude.push(Prelude {
            path: ".git/index".into(),
            data: fs_err::read(&index).map_err(|source| WorkspaceError::Read {
                path: index.clone(),
                source,
            })?,
        });
        if !manifest.changed.is_empty() {
            prelude.push(Prelude {
                path: CHANGED.into(),
                data: manifest.changed.clone(),
            });
        }
        Ok(GitDir {
            prelude,
            pack: Tree {
                root: pack_dir,
                under: ".git/objects/pack".into(),
                entries: pack,
            },
            _scratch: scratch,
        })
    }
}

/// The guest repository's `config`: what `git init` writes, for `format` (`sha1` or
/// `sha256`).
fn git_config(format: &str) -> String {
    let mut config = String::from("[core]\n");
    let sha256 = format.trim() == "sha256";
    config.push_str(if sha256 {
        "\trepositoryformatversion = 1\n"
    } else {
        "\trepositoryformatversion = 0\n"
    });
    config.push_str("\tfilemode = true\n\tbare = false\n\tlogallrefupdates = true\n");
    if sha256 {
        config.push_str("[extensions]\n\tobjectformat = sha256\n");
    }
    config
}

/// The guest's `HEAD`: on the host's branch, or detached at its commit.
fn head_file(head: Option<&str>, branch: Option<&str>) -> String {
    match (branch, head) {
        (Some(branch), _) => format!("ref: {branch}\n"),
        (None, Some(head)) => format!("{head}\n"),
        // Neither on a branch nor at a commit cannot happen; git's default branch.
        (None, None) => "ref: refs/heads/master\n".into(),
    }
}

/// The rev-list arguments `pack-objects --revs` reads: HEAD, and without `history` HEAD
/// marked shallow, so the walk stops at its commit (as `git clone --depth 1` does).
fn pack_revs(head: Option<&str>, history: bool) -> String {
    match (head, history) {
        (None, _) => String::new(),
        (Some(head), true) => format!("{head}\n"),
        (Some(head), false) => format!("--shallow {head}\n{head}\n"),
    }
}

/// Runs `git pack-objects` on `revs`: a pack of those objects and its index in `dir`,
/// named as git names them. Answers the files made.
async fn pack(git: &Git<'_>, revs: &str, dir: &Path) -> Result<Vec<ShipEntry>, WorkspaceError> {
    let base = dir.join("pack");
    let base = base.to_string_lossy();
    let args = ["pack-objects", "--revs", "--indexed-objects", "-q", &base];
    git.run(
        &args,
        Objects::Both,
        None,
        Some(revs.as_bytes()),
        Stdio::piped(),
    )
    .await?;
    let made = fs_err::read_dir(dir)
        .and_then(|dir| {
            dir.map(|e| e.map(|e| e.file_name()))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|source| WorkspaceError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
    Ok(made
        .into_iter()
        .map(|name| ShipEntry {
            path: name.into(),
            kind: Kind::File,
        })
        .collect())
}

/// Host git in `repo`, with a scratch object directory for the objects the ship makes:
/// the repository is only read. (Asked to write an object it finds, git refreshes
/// that object's mtime, so what writes sees the scratch directory alone.)
struct Git<'a> {
    repo: &'a HostRepo,
    scratch: &'a Path,
    /// The repository's own object directory.
    own: PathBuf,
    /// Its object format: `sha1` or `sha256`.
    format: String,
}

/// Which objects a [`Git`] command sees.
#[derive(Clone, Copy)]
enum Objects {
    /// The scratch directory's alone: what it writes goes there.
    Scratch,
    /// The scratch directory's and, beside them, the repository's.
    Both,
}

impl<'a> Git<'a> {
    async fn new(repo: &'a HostRepo, scratch: &'a Path) -> Result<Git<'a>, WorkspaceError> {
        let args = ["rev-parse", "--git-path", "objects", "--show-object-format"];
        let cmd = super::repo::git_command(&repo.root, &args);
        let out = git_step(repo, cmd, &args, None, Stdio::piped()).await?;
        let out = String::from_utf8_lossy(&out);
        let mut lines = out.lines();
        let own = repo.root.join(lines.next().unwrap_or_default());
        let format = lines.next().unwrap_or("sha1").to_string();
        Ok(Git {
            repo,
            scratch,
            own,
            format,
        })
    }

    /// Runs git `args` seeing `objects`, with `index` as its index (if given) and
    /// `input` on stdin, stdout to `stdout`; answers what it printed there when piped.
    async fn run(
        &self,
        args: &[&str],
        objects: Objects,
        index: Option<&Path>,
        input: Option<&[u8]>,
        stdout: Stdio,
    ) -> Result<Vec<u8>, WorkspaceError> {
        let mut cmd = super::repo::git_command(&self.repo.root, args);
        cmd.env("GIT_OBJECT_DIRECTORY", self.scratch);
        if let Objects::Both = objects {
            cmd.env("GIT_ALTERNATE_OBJECT_DIRECTORIES", &self.own);
        }
        if let Some(index) = index {
            cmd.env("GIT_INDEX_FILE", index);
        }
        git_step(self.repo, cmd, args, input, stdout).await
    }
}

/// Runs `cmd` (git `args` in `repo`) with `input` on stdin and stdout to `stdout`;
/// answers what it printed there when piped.
async fn git_step(
    repo: &HostRepo,
    cmd: std::process::Command,
    args: &[&str],
    input: Option<&[u8]>,
    stdout: Stdio,
) -> Result<Vec<u8>, WorkspaceError> {
    let mut cmd = tokio::process::Command::from(cmd);
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(stdout)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(WorkspaceError::GitMissing)?;
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        stdin
            .write_all(input)
            .await
            .map_err(|source| WorkspaceError::Write {
                path: format!("git {}", args[0]).into(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(WorkspaceError::GitMissing)?;
    if !out.status.success() {
        return Err(WorkspaceError::Git {
            command: args.join(" "),
            dir: repo.root.clone(),
            stderr: Stderr::from_bytes(&out.stderr),
        });
    }
    Ok(out.stdout)
}

/// Runs a guest step whose stdout is not needed; a non-zero exit is an error that
/// carries the step's stderr.
async fn step<R: AsyncRead + Unpin>(
    guest: &impl Runner,
    what: &'static str,
    spec: ExecSpec,
    stdin: R,
) -> Result<(), WorkspaceError> {
    let captured = guest
        .run(spec, stdin, &mut tokio::io::sink())
        .await
        .map_err(|e| capture_error(guest.name(), e))?;
    check(guest.name(), what, captured)
}

/// A non-zero exit as an error naming the step.
pub fn check(vm: &str, step: &'static str, captured: Captured) -> Result<(), WorkspaceError> {
    Ok(captured.success(vm, step)?)
}

pub fn capture_error(vm: &str, e: CaptureError) -> WorkspaceError {
    match e {
        CaptureError::Input(source) | CaptureError::Output(source) => WorkspaceError::Stream {
            vm: vm.into(),
            source,
        },
        CaptureError::Cli(e) => WorkspaceError::Cli(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::workspace::testkit::{git_in, LocalGuest, TempRepo};
    use crate::workspace::{export, Base};

    /// A repository with two commits, the second changing `f.txt`.
    fn two_commits() -> TempRepo {
        let repo = TempRepo::new();
        repo.write("f.txt", b"v1\n");
        repo.write("same.txt", b"unchanged since the first commit\n");
        repo.git(&["add", "-A"]);
        repo.git(&["commit", "-qm", "first"]);
        repo.write("f.txt", b"v2\n");
        repo.git(&["commit", "-qam", "second"]);
        repo
    }

    async fn shipped(repo: &TempRepo, history: bool) -> (tempfile::TempDir, PathBuf) {
        let guest = tempfile::tempdir().unwrap();
        let opts = ShipOptions {
            include_untracked: false,
            dest: guest.path().join("repo").to_str().unwrap().to_string(),
            history,
        };
        ship(&LocalGuest, &HostRepo::open(repo.path()).unwrap(), &opts)
            .await
            .unwrap();
        let dest = PathBuf::from(&opts.dest);
        (guest, dest)
    }

    #[tokio::test]
    async fn by_default_the_guest_gets_head_alone_as_a_shallow_repository() {
        let repo = two_commits();

        let (_guest, dest) = shipped(&repo, false).await;

        let head = repo.git(&["rev-parse", "HEAD"]);
        assert_eq!(fs_err::read(dest.join(".git/shallow")).unwrap(), head);
        assert_eq!(git_in(&dest, &["rev-list", "--count", "HEAD"]), b"1\n");
        assert_eq!(git_in(&dest, &["rev-parse", "HEAD"]), head);
        git_in(&dest, &["fsck", "--no-progress", "--connectivity-only"]);
        let count = git_in(&dest, &["count-objects", "-v"]);
        let count = String::from_utf8(count).unwrap();
        // HEAD's commit, its tree and its two blobs: not the first commit's.
        assert!(count.contains("in-pack: 4\n"), "{count}");
    }

    #[tokio::test]
    async fn with_history_the_guest_gets_every_commit() {
        let repo = two_commits();

        let (_guest, dest) = shipped(&repo, true).await;

        assert!(!dest.join(".git/shallow").exists());
        assert_eq!(git_in(&dest, &["rev-list", "--count", "HEAD"]), b"2\n");
    }

    #[tokio::test]
    async fn a_shallow_workspace_still_exports_against_head() {
        let repo = two_commits();
        let (_guest, dest) = shipped(&repo, false).await;
        fs_err::write(dest.join("f.txt"), b"v3\n").unwrap();

        let mut patch = Vec::new();
        export(&LocalGuest, dest.to_str().unwrap(), Base::Head, &mut patch)
            .await
            .unwrap();

        let patch = String::from_utf8(patch).unwrap();
        assert!(patch.contains("-v2\n+v3\n"), "{patch}");
        assert!(!patch.contains("same.txt"), "{patch}");
    }

    #[test]
    fn the_walk_stops_at_head_unless_history_is_asked_for() {
        assert_eq!(pack_revs(Some("abc"), false), "--shallow abc\nabc\n");
        assert_eq!(pack_revs(Some("abc"), true), "abc\n");
        assert_eq!(pack_revs(None, false), "");
    }
}
