//! Shipping a host working tree into a guest directory, as streams:
//!
//! 1. `init`: the guest checks the destination is empty and runs `git init`.
//! 2. At the same time:
//!    * `objects`: `git pack-objects --revs --indexed-objects` (HEAD's commit and tree,
//!      or its whole history with [`ShipOptions::history`], plus every blob the index
//!      names, `--stdout`) and `git index-pack -o` write a pack and its index into a
//!      private temp dir on the host (the host repository is only read), which go as a tar into the guest's `.git/objects/pack`: the guest does no hashing or
//!      inflating (`index-pack` under emulation took as long as the files' tar).
//!      Without history the guest repository is shallow: `.git/shallow` names HEAD,
//!      as after `git clone --depth 1`;
//!    * `files`: a tar of the working-tree files into `tar -x`.
//! 3. `finish`: the guest points its branch (or detached HEAD) at the host's HEAD,
//!    replays the host index (`ls-files -s` into `update-index --index-info`), so
//!    staged and unstaged changes look the same as on the host, and records two refs:
//!    `refs/banger/base` (the shipped HEAD) and `refs/banger/shipped` (a tree of the
//!    working tree as shipped). For that tree the guest hashes only the paths the host
//!    lists as differing from its index (carried in the tar as [`CHANGED`]).
//!
//! The replayed index has no stat data, so the guest's first `git status` rehashes the
//! files once (about a second per 10,000 files under emulation) and keeps the result.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use banger_wire::agent::ExecSpec;
use banger_wire::workspace::{FILES, INIT, NOT_EMPTY, NO_GIT, NO_TAR};
use tokio::io::{AsyncRead, AsyncWriteExt};

use super::error::WorkspaceError;
use super::exec::{self, CaptureError, Captured, GuestFailed, Runner, Stderr};
use super::repo::{HostRepo, Kind, Manifest, ShipEntry};
use super::tarball::{self, Prelude};

/// `$1` the repository, `$2` the commit it is shallow at (empty: full history); a tar
/// of a pack and its index on stdin.
const OBJECTS: &str = r#"set -eu
if [ -n "$2" ]; then printf '%s\n' "$2" >"$1/.git/shallow"; fi
exec tar -x --no-same-owner -C "$1/.git/objects/pack""#;

/// Where the tar puts the host's list of changed paths (inside the guest's `.git`).
pub const CHANGED: &str = ".git/banger-changed";

/// `$1` the repository, `$2` the host's HEAD (empty: unborn), `$3` the branch it is on
/// (empty: detached); the host index (`ls-files -s -z`) on stdin. As few git processes
/// as it takes: each costs tens of milliseconds under emulation.
const FINISH: &str = r#"set -eu
cd "$1"
snap=.git/banger-shipped.index
trap 'rm -f "$snap" .git/banger-changed' EXIT
rm -f .git/index
git update-index -z --index-info
if [ -s .git/banger-changed ]; then
  cp .git/index "$snap"
  GIT_INDEX_FILE=$snap git update-index -z --add --remove --stdin <.git/banger-changed
  tree=$(GIT_INDEX_FILE=$snap git write-tree)
else
  tree=$(git write-tree)
fi
{
  if [ -n "$2" ]; then
    printf 'update refs/banger/base %s\n' "$2"
    if [ -n "$3" ]; then printf 'update %s %s\n' "$3" "$2"; else printf 'option no-deref\nupdate HEAD %s\n' "$2"; fi
  fi
  printf 'update refs/banger/shipped %s\n' "$tree"
} | git update-ref --stdin
"#;

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
    let manifest = Manifest::collect(repo, opts.include_untracked)?;
    let dest = opts.dest.as_str();
    let branch = repo.branch.as_deref().unwrap_or("");
    let head = repo.head.as_deref().unwrap_or("");

    let init = script("banger-ws-init", INIT, &[dest, branch]);
    match step(guest, "init", init, tokio::io::empty()).await {
        Err(WorkspaceError::Guest(GuestFailed { code: NO_GIT, .. })) => {
            return Err(WorkspaceError::GuestToolMissing {
                vm: vm.into(),
                tool: "git",
            })
        }
        Err(WorkspaceError::Guest(GuestFailed { code: NO_TAR, .. })) => {
            return Err(WorkspaceError::GuestToolMissing {
                vm: vm.into(),
                tool: "tar",
            })
        }
        Err(WorkspaceError::Guest(GuestFailed {
            code: NOT_EMPTY, ..
        })) => {
            return Err(WorkspaceError::DestNotEmpty {
                vm: vm.into(),
                dest: dest.into(),
            })
        }
        other => other?,
    }

    let objects = ship_objects(guest, repo, dest, opts.history);
    let files = ship_files(guest, repo, &manifest, dest);
    futures::try_join!(objects, files)?;

    let finish = script("banger-ws-finish", FINISH, &[dest, head, branch]);
    step(
        guest,
        "recording the shipped state",
        finish,
        &manifest.index[..],
    )
    .await?;
    Ok(Shipped {
        files: manifest.entries.len(),
        skipped: manifest.skipped,
    })
}

async fn ship_files(
    guest: &impl Runner,
    repo: &HostRepo,
    manifest: &Manifest,
    dest: &str,
) -> Result<(), WorkspaceError> {
    let changed = Prelude {
        path: CHANGED.into(),
        data: manifest.changed.clone(),
    };
    let spec = script("banger-ws-files", FILES, &[dest]);
    let files = (repo.root.clone(), vec![changed], manifest.entries.clone());
    send_tar(guest, "unpacking the files", spec, files).await
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

async fn ship_objects(
    guest: &impl Runner,
    repo: &HostRepo,
    dest: &str,
    history: bool,
) -> Result<(), WorkspaceError> {
    let head = repo.head.as_deref();
    let packed = pack(repo, &pack_revs(head, history)).await?;
    let entries = fs_err::read_dir(packed.path())
        .and_then(|dir| {
            dir.map(|e| e.map(|e| e.file_name()))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|source| WorkspaceError::Read {
            path: packed.path().to_path_buf(),
            source,
        })?
        .into_iter()
        .map(|name| ShipEntry {
            path: name.into(),
            kind: Kind::File,
        })
        .collect();
    let shallow = head.filter(|_| !history).unwrap_or("");
    let spec = script("banger-ws-objects", OBJECTS, &[dest, shallow]);
    let objects = (packed.path().to_path_buf(), Vec::new(), entries);
    send_tar(guest, "storing the git objects", spec, objects).await
}

/// Runs `git pack-objects --stdout` on `revs` and `git index-pack` on its output: a
/// pack of those objects and its index, in a private temp dir that goes away when
/// dropped. The host repository is only read (`pack-objects` given a base name writes
/// its temporary files into the repository's own `objects/pack`).
async fn pack(repo: &HostRepo, revs: &str) -> Result<tempfile::TempDir, WorkspaceError> {
    let dir = tempfile::Builder::new()
        .prefix("banger-pack.")
        .tempdir()
        .map_err(|source| WorkspaceError::Write {
            path: std::env::temp_dir(),
            source,
        })?;
    let pack_file = dir.path().join("pack.pack");
    let out_file = fs_err::File::create(&pack_file).map_err(|source| WorkspaceError::Write {
        path: pack_file.clone(),
        source,
    })?;
    let args = [
        "pack-objects",
        "--revs",
        "--indexed-objects",
        "-q",
        "--stdout",
    ];
    git_step(
        repo,
        &args,
        Some(revs),
        Stdio::from(out_file.into_parts().0),
    )
    .await?;
    let idx = dir.path().join("pack.idx");
    let (idx_arg, pack_arg) = (idx.to_string_lossy(), pack_file.to_string_lossy());
    let args = ["index-pack", "-o", idx_arg.as_ref(), pack_arg.as_ref()];
    let hash = git_step(repo, &args, None, Stdio::piped()).await?;
    // Git names packs after their checksum; index-pack prints it.
    let hash = String::from_utf8_lossy(&hash).trim().to_string();
    for ext in ["pack", "idx", "rev"] {
        let from = dir.path().join(format!("pack.{ext}"));
        if from.exists() {
            let to = dir.path().join(format!("pack-{hash}.{ext}"));
            fs_err::rename(&from, &to)
                .map_err(|source| WorkspaceError::Write { path: to, source })?;
        }
    }
    Ok(dir)
}

/// Runs git `args` in `repo` with `input` on stdin and stdout to `stdout`; answers what
/// it printed there when piped.
async fn git_step(
    repo: &HostRepo,
    args: &[&str],
    input: Option<&str>,
    stdout: Stdio,
) -> Result<Vec<u8>, WorkspaceError> {
    let mut cmd = tokio::process::Command::from(super::repo::git_command(&repo.root, args));
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
            .write_all(input.as_bytes())
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

/// Streams a tar of `entries` below `root` (after `prelude`) into the guest step
/// `spec`, built on a blocking thread while it is sent.
async fn send_tar(
    guest: &impl Runner,
    what: &'static str,
    spec: ExecSpec,
    (root, prelude, entries): (PathBuf, Vec<Prelude>, Vec<ShipEntry>),
) -> Result<(), WorkspaceError> {
    let (tar, builder) = tarball::stream(root, prelude, entries);
    let sent = step(guest, what, spec, tar).await;
    let built = builder.await.map_err(|e| WorkspaceError::Write {
        path: "<tar stream>".into(),
        source: e.into(),
    })?;
    match (sent, built) {
        // A failed build fails the stream too; the build's own error says why.
        (Err(WorkspaceError::Stream { .. }), Err(e)) | (Ok(()), Err(e)) => Err(e),
        (sent, _) => sent,
    }
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
