//! One command in a VM made for it: what `banger vm run` and MCP's `run` share. The
//! repository to ship is checked before a VM exists for it; the VM is exec-only (the
//! command goes through the agent, never ssh); the workspace's directory is where the
//! command starts. Running the command, bringing its changes back and deleting a
//! throwaway VM are the callers': a terminal and a tool answer want them done
//! differently.

use std::path::{Path, PathBuf};

use banger_wire::api::{Request, VmCreateSpec, VmInfo, VmState};
use banger_wire::{Diagnostic, ErrorCode};

use crate::client::Client;
use crate::error::CliError;
use crate::output;
use crate::vm;
use crate::workspace::{self, HostRepo, ShipOptions, WorkspaceError};

/// A repository to ship into the run's VM, and where.
#[derive(Debug)]
pub struct Workspace {
    pub repo: HostRepo,
    pub opts: ShipOptions,
}

impl Workspace {
    /// Checks the guest directory and the repository at `path` (a work tree without
    /// submodules), so that a run fails before it costs a VM.
    pub fn open(path: &Path, opts: ShipOptions) -> Result<Workspace, WorkspaceError> {
        workspace::check_dest(&opts.dest)?;
        let repo = HostRepo::open(path)?;
        repo.check_shippable()?;
        Ok(Workspace { repo, opts })
    }
}

/// The run's VM: the one `spec` names if it exists (started if it is not running),
/// else a new exec-only VM made from `spec`.
pub async fn vm(client: &Client, spec: VmCreateSpec) -> Result<VmInfo, CliError> {
    if let Some(name) = &spec.name {
        let existing = vm::show(client, name).await;
        if let (Ok(vm), Some(_)) = (&existing, spec.ttl_secs) {
            output::note(&format!(
                "--ttl applies to new VMs; vm {} exists and keeps its lifetime",
                vm.name
            ));
        }
        if let (Ok(vm), Some(_)) = (&existing, spec.idle_timeout_secs) {
            output::note(&format!(
                "--idle-timeout applies to new VMs; vm {} exists and keeps its own",
                vm.name
            ));
        }
        match existing {
            Ok(vm) if vm.state == VmState::Running => return Ok(vm),
            Ok(vm) => {
                let name = vm.name.clone();
                client.rpc(&Request::VmStart { name }).await?;
                return Ok(vm);
            }
            Err(CliError::Remote(e)) if e.code == ErrorCode::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let spec = VmCreateSpec {
        exec_only: true,
        ..spec
    };
    vm::create(client, spec).await
}

/// Refuses a patch file `vm run --export` could not write (its directory missing, or a
/// directory in its place), before a VM exists for the run.
pub fn check_export_file(file: &Path) -> Result<(), CliError> {
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let problem = if !dir.is_dir() {
        format!("{} is not a directory", dir.display())
    } else if file.is_dir() {
        "it is a directory".to_string()
    } else {
        return Ok(());
    };
    Err(CliError::usage(
        format!("cannot write the patch to {}: {problem}", file.display()),
        Some("give --export a file in an existing directory, e.g. --export changes.patch"),
    ))
}

/// The exit code of a run whose command ended with `command` and whose changes came
/// back with `back` (0, 1 for conflicts left, or the failure's code): the command's
/// own, unless it succeeded and the changes did not come back whole, so that a success
/// always means the changes are there.
pub fn exit_code(command: i32, back: i32) -> i32 {
    if command != 0 {
        command
    } else {
        back
    }
}

/// The command ended, but its changes could not be brought back; the working tree is
/// untouched (an apply is all-or-nothing) and no patch file was left half-written.
#[derive(Debug, thiserror::Error)]
#[error("the command exited with {code}, but its changes were not brought back; {} is as it was", .root.display())]
pub struct NotBroughtBack {
    pub code: i32,
    pub root: PathBuf,
    /// The VM is deleted (`--rm`): it cannot be exported from again.
    pub vm_deleted: bool,
    #[source]
    pub source: WorkspaceError,
}

impl Diagnostic for NotBroughtBack {
    fn code(&self) -> ErrorCode {
        self.source.code()
    }

    fn chain(&self) -> Vec<String> {
        let mut chain = vec![self.source.to_string()];
        chain.extend(self.source.chain());
        chain
    }

    fn hint(&self) -> Option<String> {
        if self.vm_deleted {
            Some(
                "the VM is deleted (--rm); to look into it, run without --rm and export with \
                 `banger workspace export NAME -o FILE`"
                    .into(),
            )
        } else {
            self.source.hint()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::output::render_error;

    #[test]
    fn a_run_exits_with_the_commands_code_unless_only_the_export_failed() {
        assert_eq!(exit_code(3, 0), 3);
        assert_eq!(exit_code(3, 11), 3);
        assert_eq!(exit_code(124, 1), 124);
        assert_eq!(exit_code(0, 0), 0);
        assert_eq!(exit_code(0, 11), 11);
        assert_eq!(exit_code(0, 1), 1);
    }

    #[test]
    fn a_failed_export_says_the_command_ran_and_the_tree_is_untouched() {
        let err = CliError::failed(NotBroughtBack {
            code: 3,
            root: "/src/app".into(),
            vm_deleted: true,
            source: WorkspaceError::PatchTooLarge {
                vm: "run-1".into(),
                limit: 256 << 20,
            },
        });

        assert_eq!(
            render_error(&err, false),
            "error: the command exited with 3, but its changes were not brought back; \
             /src/app is as it was\n\
             caused by: the patch from vm run-1 is larger than 256 MiB\n\
             hint: the VM is deleted (--rm); to look into it, run without --rm and export \
             with `banger workspace export NAME -o FILE`\n"
        );
        assert_eq!(err.code(), ErrorCode::FailedPrecondition);
    }

    #[test]
    fn an_export_file_needs_an_existing_directory() {
        let tmp = tempfile::tempdir().unwrap();

        let ok = check_export_file(&tmp.path().join("out.patch"));
        let no_dir = check_export_file(&tmp.path().join("missing/out.patch"));
        let a_dir = check_export_file(tmp.path());

        assert!(ok.is_ok());
        assert!(no_dir
            .unwrap_err()
            .to_string()
            .contains("is not a directory"));
        assert!(a_dir.unwrap_err().to_string().contains("it is a directory"));
    }
}
