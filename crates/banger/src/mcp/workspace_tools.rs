//! `workspace_prepare` and `workspace_export`: the CLI's workspace verbs, with every
//! host path checked against the allowed roots first.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use rmcp::handler::server::wrapper::Parameters;
use rmcp::{tool, tool_router, Json};
use tokio::io::AsyncWrite;

use super::capture::Capped;
use super::error::ToolError;
use super::params::{WorkspaceExportArgs, WorkspacePrepareArgs};
use super::results::{Applied, Exported, Prepared};
use super::roots::AllowedRoots;
use super::server::Sandbox;
use crate::run::Workspace;
use crate::vm;
use crate::workspace::exec::Vm;
use crate::workspace::{self, Base, HostRepo, ShipOptions};

/// The largest patch an answer carries inline.
pub const PATCH_CAP: usize = 4 << 20;

#[tool_router(router = workspace_tools, vis = "pub(super)")]
impl Sandbox {
    #[tool(
        description = "Copy a host git repository's working tree into a running VM (default \
/root/repo): tracked files as they are now, uncommitted edits included, with git history, so \
`git status` and `git diff` in the VM match the host. The host path must be inside a \
directory the server allows (--allow-path). Answers with `workdir`, the guest directory to \
run commands in. Afterwards, workspace_export returns what changed in the VM as a patch.",
        annotations(destructive_hint = false, open_world_hint = false)
    )]
    async fn workspace_prepare(
        &self,
        Parameters(args): Parameters<WorkspacePrepareArgs>,
    ) -> Result<Json<Prepared>, ToolError> {
        let repo = open_repo(&self.shared.roots, &args.path)?;
        let client = self.shared.vm_client(&args.vm).await?;
        let opts = ShipOptions {
            include_untracked: args.include_untracked,
            dest: vm::workspace_dest(&client, &args.vm, args.dest).await?,
            history: args.history,
        };
        let vm = Vm {
            client: &client,
            name: &args.vm,
        };
        let prepared = workspace::prepare(&vm, &repo, &opts).await?;
        Ok(Json(Prepared::new(&args.vm, prepared)))
    }

    #[tool(
        description = "Return the changes made in a VM's workspace (see workspace_prepare) as \
a git patch against the shipped HEAD commit: edits, new, deleted and renamed files, mode \
changes and binary files (git's --binary format). Apply it on the host with `git apply`. \
Returned inline up to 4 MiB; with `output` (a .patch file inside an allowed directory) it is \
written there instead. The VM's own git state is left untouched.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn workspace_export(
        &self,
        Parameters(args): Parameters<WorkspaceExportArgs>,
    ) -> Result<Json<Exported>, ToolError> {
        if let Some(dest) = &args.dest {
            workspace::check_dest(dest)?;
        }
        // Check the host side before any guest work.
        let target = args
            .output
            .as_deref()
            .map(|p| patch_target(&self.shared.roots, p))
            .transpose()?;
        let client = self.shared.vm_client(&args.vm).await?;
        let dest = vm::workspace_dest(&client, &args.vm, args.dest).await?;
        let vm = Vm {
            client: &client,
            name: &args.vm,
        };
        match target {
            Some(target) => {
                let bytes = workspace::export_to_file(&vm, &dest, Base::Head, &target).await?;
                Ok(Json(Exported {
                    vm: args.vm,
                    patch: None,
                    output: Some(target.display().to_string()),
                    bytes,
                }))
            }
            None => {
                let mut out = CappedWriter(Capped::new(PATCH_CAP));
                workspace::export(&vm, &dest, Base::Head, &mut out).await?;
                let patch = inline_patch(&args.vm, out.0)?;
                Ok(Json(Exported {
                    vm: args.vm,
                    bytes: patch.len() as u64,
                    patch: Some(patch),
                    output: None,
                }))
            }
        }
    }
}

/// What `run` brings back of its workspace once the command ended.
#[derive(Debug, Default)]
pub struct BroughtBack {
    pub patch: Option<String>,
    pub applied: Option<Applied>,
    /// Why not all of it came back; the repository is as it was.
    pub error: Option<String>,
}

/// `run`'s `export` (the patch against the shipped HEAD, inline) and `apply` (the
/// changes since the ship, into `ws`'s working tree through the guard).
pub async fn bring_back(guest: &Vm<'_>, ws: &Workspace, export: bool, apply: bool) -> BroughtBack {
    let dest = &ws.opts.dest;
    let mut back = BroughtBack::default();
    let mut errors = Vec::new();
    if export {
        let mut out = CappedWriter(Capped::new(PATCH_CAP));
        let patch = match workspace::export(guest, dest, Base::Head, &mut out).await {
            Ok(()) => inline_patch(guest.name, out.0).map_err(|e| match e {
                ToolError::PatchTooLarge { vm, bytes, cap } => ToolError::invalid(
                    format!("the patch from vm {vm} is {bytes} bytes, more than the {cap} an answer may carry"),
                    Some("use `apply`, or vm_create, workspace_prepare, exec and workspace_export with `output`"),
                ),
                e => e,
            }),
            Err(e) => Err(e.into()),
        };
        match patch {
            Ok(patch) => back.patch = Some(patch),
            Err(e) => errors.push(e.render()),
        }
    }
    if apply {
        match workspace::export_apply(guest, dest, &ws.repo).await {
            Ok(applied) => back.applied = Some(applied.into()),
            Err(e) => errors.push(ToolError::from(e).render()),
        }
    }
    back.error = (!errors.is_empty()).then(|| errors.join("\n"));
    back
}

/// Opens the repository at `path`; it, and the repository's top, must be allowed.
pub fn open_repo(roots: &AllowedRoots, path: &Path) -> Result<HostRepo, ToolError> {
    let repo = HostRepo::open(&roots.existing(path)?)?;
    check_top(roots, path, &repo)?;
    Ok(repo)
}

/// What `run` ships: [`Workspace::open`] on an allowed path whose repository's top is
/// allowed too.
pub fn open_workspace(
    roots: &AllowedRoots,
    path: &Path,
    opts: ShipOptions,
) -> Result<Workspace, ToolError> {
    let ws = Workspace::open(&roots.existing(path)?, opts)?;
    check_top(roots, path, &ws.repo)?;
    Ok(ws)
}

fn check_top(roots: &AllowedRoots, path: &Path, repo: &HostRepo) -> Result<(), ToolError> {
    match roots.existing(&repo.root) {
        Ok(_) => Ok(()),
        Err(_) => Err(ToolError::RepoOutside {
            path: path.to_path_buf(),
            root: repo.root.clone(),
        }),
    }
}

/// Where `workspace_export` may write: an allowed `.patch` or `.diff` file outside any
/// `.git` directory. The guest writes the patch, so it must never land where the host
/// would run it (git config or hooks, scripts).
pub fn patch_target(roots: &AllowedRoots, path: &Path) -> Result<PathBuf, ToolError> {
    let target = roots.new_file(path)?;
    let is_patch = matches!(
        target.extension().and_then(|e| e.to_str()),
        Some("patch" | "diff")
    );
    let in_git = target
        .components()
        .any(|c| c.as_os_str().eq_ignore_ascii_case(".git"));
    if is_patch && !in_git {
        return Ok(target);
    }
    Err(ToolError::invalid(
        format!(
            "refusing to write the patch to {}: `output` must be a .patch or .diff file outside .git",
            target.display()
        ),
        Some("e.g. /path/to/repo/changes.patch"),
    ))
}

fn inline_patch(vm: &str, out: Capped) -> Result<String, ToolError> {
    if out.truncated() {
        return Err(ToolError::PatchTooLarge {
            vm: vm.into(),
            bytes: out.total,
            cap: out.cap,
        });
    }
    String::from_utf8(out.kept).map_err(|_| {
        ToolError::invalid(
            format!(
                "the patch from vm {vm} is not UTF-8 text (a changed file uses another encoding)"
            ),
            Some("pass `output` (a .patch file inside an allowed directory) to write it there"),
        )
    })
}

/// An [`AsyncWrite`] into a [`Capped`] buffer: it accepts everything and keeps the head.
struct CappedWriter(Capped);

impl AsyncWrite for CappedWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn a_patch_over_the_cap_is_refused_with_its_size() {
        let mut out = CappedWriter(Capped::new(8));
        out.write_all(b"diff --git a/x b/x\n").await.unwrap();

        let err = inline_patch("dev", out.0).unwrap_err();

        assert!(
            matches!(
                err,
                ToolError::PatchTooLarge {
                    bytes: 19,
                    cap: 8,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn patches_go_only_to_patch_files_outside_git() {
        let tmp = tempfile::tempdir().unwrap();
        let top = fs_err::canonicalize(tmp.path()).unwrap();
        fs_err::create_dir_all(top.join(".git/hooks")).unwrap();
        let roots = AllowedRoots::new(std::slice::from_ref(&top)).unwrap();

        let ok = patch_target(&roots, &top.join("changes.patch")).unwrap();

        assert_eq!(ok, top.join("changes.patch"));
        assert!(patch_target(&roots, &top.join("build.sh")).is_err());
        assert!(patch_target(&roots, &top.join(".git/config")).is_err());
        assert!(patch_target(&roots, &top.join(".git/hooks/x.patch")).is_err());
    }

    #[test]
    fn a_repository_below_an_allowed_subdirectory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let top = fs_err::canonicalize(tmp.path()).unwrap();
        let git = |args: &[&str]| {
            let ok = std::process::Command::new("git")
                .arg("-C")
                .arg(&top)
                .args(args)
                .output()
                .map(|o| o.status.success());
            ok.unwrap_or(false)
        };
        if !git(&["init", "-q"]) {
            eprintln!("skipping: git is not available");
            return;
        }
        fs_err::create_dir_all(top.join("sub")).unwrap();
        let roots = AllowedRoots::new(&[top.join("sub")]).unwrap();

        let err = open_repo(&roots, &top.join("sub")).unwrap_err();

        assert!(matches!(err, ToolError::RepoOutside { .. }), "{err:?}");
    }
}
