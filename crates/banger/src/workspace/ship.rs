//! Shipping a host working tree into a guest directory, as streams:
//!
//! 1. `init`: the guest checks the destination is empty and runs `git init`.
//! 2. At the same time:
//!    * `objects`: `git pack-objects --revs --indexed-objects` (HEAD's history plus every
//!      blob the index names) into `git index-pack --stdin`;
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

use std::path::PathBuf;
use std::process::Stdio;

use banger_wire::agent::ExecSpec;
use banger_wire::workspace::{FILES, INIT, NOT_EMPTY, NO_GIT, NO_TAR};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::error::{Stderr, WorkspaceError};
use super::exec::{self, CaptureError, Captured, Runner};
use super::repo::{HostRepo, Manifest};
use super::tarball::{self, Prelude};

const OBJECTS: &str = r#"exec git -C "$1" index-pack --stdin >/dev/null"#;

/// Where the tar puts the host's list of changed paths (inside the guest's `.git`).
pub const CHANGED: &str = ".git/banger-changed";

const FINISH: &str = r#"set -eu
cd "$1"
snap=.git/banger-shipped.index
trap 'rm -f "$snap" .git/banger-changed' EXIT
if [ -n "$2" ]; then
  git update-ref refs/banger/base "$2"
  if [ -n "$3" ]; then git update-ref "$3" "$2"; else git update-ref --no-deref HEAD "$2"; fi
fi
rm -f .git/index
git update-index -z --index-info
cp .git/index "$snap"
GIT_INDEX_FILE=$snap git update-index -z --add --remove --stdin <.git/banger-changed
git update-ref refs/banger/shipped "$(GIT_INDEX_FILE=$snap git write-tree)"
"#;

/// What to ship and where.
#[derive(Debug, Clone)]
pub struct ShipOptions {
    pub include_untracked: bool,
    /// Absolute directory in the guest.
    pub dest: String,
}

/// What a ship did.
#[derive(Debug)]
pub struct Shipped {
    pub files: usize,
    /// Nested repositories left out of `--include-untracked`.
    pub skipped: Vec<PathBuf>,
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
        Err(WorkspaceError::Guest { code: NO_GIT, .. }) => {
            return Err(WorkspaceError::GuestToolMissing {
                vm: vm.into(),
                tool: "git",
            })
        }
        Err(WorkspaceError::Guest { code: NO_TAR, .. }) => {
            return Err(WorkspaceError::GuestToolMissing {
                vm: vm.into(),
                tool: "tar",
            })
        }
        Err(WorkspaceError::Guest {
            code: NOT_EMPTY, ..
        }) => {
            return Err(WorkspaceError::DestNotEmpty {
                vm: vm.into(),
                dest: dest.into(),
            })
        }
        other => other?,
    }

    let objects = ship_objects(guest, repo, dest);
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
    let (tar, builder) =
        tarball::stream(repo.root.clone(), vec![changed], manifest.entries.clone());
    let spec = script("banger-ws-files", FILES, &[dest]);
    let sent = step(guest, "unpacking the files", spec, tar).await;
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

async fn ship_objects(
    guest: &impl Runner,
    repo: &HostRepo,
    dest: &str,
) -> Result<(), WorkspaceError> {
    let args = [
        "pack-objects",
        "--revs",
        "--indexed-objects",
        "--stdout",
        "-q",
    ];
    let mut child = tokio::process::Command::from(super::repo::git_command(&repo.root, &args))
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(WorkspaceError::GitMissing)?;
    let revs = if repo.head.is_some() { "HEAD\n" } else { "" };
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(revs.as_bytes())
            .await
            .map_err(|source| WorkspaceError::Write {
                path: "git pack-objects".into(),
                source,
            })?;
    }
    let (Some(pack), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(WorkspaceError::GitMissing(std::io::Error::other(
            "no pipes to git",
        )));
    };
    let stderr = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf).await;
        buf
    });
    let spec = script("banger-ws-objects", OBJECTS, &[dest]);
    let sent = step(guest, "storing the git objects", spec, pack).await;
    let status = child.wait().await.map_err(WorkspaceError::GitMissing)?;
    if !status.success() {
        return Err(WorkspaceError::Git {
            command: args.join(" "),
            dir: repo.root.clone(),
            stderr: Stderr::from_bytes(&stderr.await.unwrap_or_default()),
        });
    }
    sent
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
    if captured.code == 0 {
        return Ok(());
    }
    Err(WorkspaceError::Guest {
        vm: vm.into(),
        step,
        code: captured.code,
        stderr: Stderr::from_bytes(&captured.stderr),
    })
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
