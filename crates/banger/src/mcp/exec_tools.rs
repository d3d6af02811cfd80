//! Commands and files in a running VM: `exec`, `write_file`, `read_file`. The file
//! tools are commands too (`cat`, `head`), with the path passed as its own argument,
//! never spliced into a shell line.

use std::time::Duration;

use base64::Engine;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::{tool, tool_router, Json};
use tokio_util::sync::CancellationToken;

use super::capture::{self, Collected, Ending};
use super::error::ToolError;
use super::params::{self, Command, Encoding, ExecArgs, ReadFileArgs, WriteFileArgs};
use super::results::{ExecOutput, FileContent, Written};
use super::server::Sandbox;
use crate::client::Client;
use crate::workspace::exec::GuestFailed;

/// How much of each output stream an `exec` answer keeps.
pub const OUTPUT_CAP: usize = 1 << 20;
/// The most `read_file` returns.
pub const FILE_CAP: usize = 1 << 20;
/// Guest-side limit for the file tools' own commands.
const FILE_TIMEOUT_SECS: u64 = 300;
/// How long past a command's own timeout the host waits for the agent's answer.
const GRACE_SECS: u64 = 30;

/// Writes stdin to the file named by `$1` (making its directory), then applies the
/// mode in `$2` if any.
const WRITE: &str = r#"set -e
mkdir -p -- "$(dirname -- "$1")"
cat >"$1"
if [ -n "$2" ]; then chmod "$2" "$1"; fi
"#;

#[tool_router(router = exec_tools, vis = "pub(super)")]
impl Sandbox {
    #[tool(
        description = "Run a command in a running VM (as root) and wait for it. Give either \
`command`, an argv array passed exactly as is (no shell: [\"ls\", \"-la\", \"/tmp\"]), or \
`shell`, one string run by `sh -c` (for pipes, `&&`, redirections). Answers with exit_code, \
stdout and stderr; each stream keeps at most 1 MiB (`truncated: true` and the byte counts say \
when more was written). A non-zero exit code is a normal answer, not a tool error. After \
`timeout_secs` (default 600) the command and its children are killed and the answer has \
`timed_out: true` with the output so far. No terminal is attached; interactive programs will \
not work. With `detach: true` it answers at once with `detached.id` while the command runs on \
(servers, long builds): `ps` lists it, `exec_output` fetches its output.",
        annotations(destructive_hint = true, open_world_hint = true)
    )]
    async fn exec(
        &self,
        Parameters(args): Parameters<ExecArgs>,
        ct: CancellationToken,
    ) -> Result<Json<ExecOutput>, ToolError> {
        let mut command = Command::new(args.command, args.shell, args.env, args.timeout_secs)?;
        command.cwd = args.cwd;
        command.user = params::user(args.user.as_deref())?;
        if args.detach == Some(true) {
            return self
                .detach(&args.vm, command, args.timeout_secs, args.stdin)
                .await;
        }
        let stdin = args.stdin.unwrap_or_default();
        let client = self.shared.vm_client(&args.vm).await?;
        let collected = exec_capped(&client, &args.vm, command, stdin.as_bytes(), &ct).await?;
        Ok(Json(collected.into()))
    }

    #[tool(
        description = "Create or replace a file in a running VM with the given content \
(UTF-8 text, or base64 with encoding \"base64\" for binary data). Parent directories are \
created. Optional `mode` sets permission bits in octal, e.g. \"755\" for a script.",
        annotations(
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn write_file(
        &self,
        Parameters(args): Parameters<WriteFileArgs>,
        ct: CancellationToken,
    ) -> Result<Json<Written>, ToolError> {
        let path = params::guest_path(&args.path)?;
        let mode = args.mode.as_deref().map(params::mode).transpose()?;
        let data = decode(&args.content, args.encoding)?;
        let command = file_command(&[
            "sh",
            "-c",
            WRITE,
            "banger-write",
            path,
            mode.as_deref().unwrap_or(""),
        ]);
        let client = self.shared.vm_client(&args.vm).await?;
        let c = exec_capped(&client, &args.vm, command, &data, &ct).await?;
        succeeded(&args.vm, &format!("writing {path}"), &c)?;
        Ok(Json(Written {
            path: path.into(),
            bytes: data.len() as u64,
        }))
    }

    #[tool(
        description = "Read a file from a running VM. Text comes back as is; bytes that are \
not UTF-8 come back base64-encoded (the `encoding` field says which). At most `max_bytes` \
(default and limit 1 MiB) are returned, with `truncated: true` when the file is longer; for \
parts of big files use exec with `tail`, `grep` or `sed -n`.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn read_file(
        &self,
        Parameters(args): Parameters<ReadFileArgs>,
        ct: CancellationToken,
    ) -> Result<Json<FileContent>, ToolError> {
        let path = params::guest_path(&args.path)?;
        let max = match args.max_bytes {
            None => FILE_CAP,
            Some(n @ 1..=FILE_CAP) => n,
            Some(n) => {
                return Err(ToolError::invalid(
                    format!("max_bytes {n} is out of range"),
                    Some("use 1 to 1048576"),
                ))
            }
        };
        // One byte more than asked for tells a longer file from one of exactly `max`.
        let limit = (max + 1).to_string();
        let command = file_command(&["head", "-c", &limit, "--", path]);
        let client = self.shared.vm_client(&args.vm).await?;
        let c = exec_capped(&client, &args.vm, command, b"", &ct).await?;
        succeeded(&args.vm, &format!("reading {path}"), &c)?;
        let truncated = c.stdout.total > max as u64;
        let mut data = c.stdout.kept;
        data.truncate(max);
        Ok(Json(FileContent::new(path, data, truncated, args.encoding)))
    }
}

impl Sandbox {
    /// `exec` with `detach`: starts the command and answers with it, output empty.
    async fn detach(
        &self,
        vm: &str,
        command: Command,
        timeout_secs: Option<u64>,
        stdin: Option<String>,
    ) -> Result<Json<ExecOutput>, ToolError> {
        if stdin.is_some() {
            return Err(ToolError::invalid(
                "a detached command takes no stdin",
                Some("write the input to a file with write_file and redirect it"),
            ));
        }
        let mut spec = command.spec();
        if timeout_secs.is_none() {
            spec.timeout_ms = None;
        }
        let client = self.shared.vm_client(vm).await?;
        let info = crate::detached::start(&client, vm, spec).await?;
        Ok(Json(ExecOutput::detached(info.into())))
    }
}

/// Runs `command` with `stdin`, keeping [`OUTPUT_CAP`] bytes per stream. The
/// agent kills the command at its own timeout; the host gives up [`GRACE_SECS`] after
/// that, and at once when the client cancels the call (dropping the stream kills the
/// command).
pub async fn exec_capped(
    client: &Client,
    vm: &str,
    command: Command,
    stdin: &[u8],
    ct: &CancellationToken,
) -> Result<Collected, ToolError> {
    let limit = Duration::from_secs(command.timeout_secs + GRACE_SECS);
    let spec = command.spec();
    let capture = capture::run(client, vm, spec, stdin, OUTPUT_CAP);
    let work = tokio::time::timeout(limit, capture);
    tokio::select! {
        done = work => match done {
            Ok(collected) => Ok(collected?),
            Err(_) => Err(ToolError::Unresponsive {
                vm: vm.into(),
                secs: GRACE_SECS,
            }),
        },
        _ = ct.cancelled() => Err(ToolError::Cancelled { vm: vm.into() }),
    }
}

/// A file tool's own command, run with [`FILE_TIMEOUT_SECS`].
fn file_command(argv: &[&str]) -> Command {
    Command {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        cwd: Some("/".into()),
        timeout_secs: FILE_TIMEOUT_SECS,
        user: None,
    }
}

/// A file tool's command must exit 0; anything else is an error carrying its stderr.
fn succeeded(vm: &str, what: &str, c: &Collected) -> Result<(), ToolError> {
    match &c.ending {
        Ending::Exited(0) => Ok(()),
        Ending::Exited(code) => Err(GuestFailed::new(vm, what, *code, &c.stderr.kept).into()),
        Ending::TimedOut(message) => Err(GuestFailed::new(vm, what, -1, message.as_bytes()).into()),
    }
}

fn decode(content: &str, encoding: Encoding) -> Result<Vec<u8>, ToolError> {
    match encoding {
        Encoding::Text => Ok(content.as_bytes().to_vec()),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(content.trim())
            .map_err(|e| {
                ToolError::invalid(
                    format!("content is not valid base64: {e}"),
                    Some("use the standard alphabet with padding, or encoding \"text\""),
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn base64_content_is_decoded_and_text_is_taken_as_is() {
        assert_eq!(decode("aGk=", Encoding::Base64).unwrap(), b"hi");
        assert_eq!(decode("aGk=", Encoding::Text).unwrap(), b"aGk=");
        assert!(decode("not base64!", Encoding::Base64).is_err());
    }

    #[test]
    fn the_write_script_makes_directories_writes_stdin_and_sets_the_mode() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("new dir/$x; echo pwned/f.txt");
        let mut child = std::process::Command::new("sh")
            .args(["-c", WRITE, "banger-write", path.to_str().unwrap(), "600"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"hello\n").unwrap();

        let status = child.wait().unwrap();

        assert!(status.success());
        assert_eq!(fs_err::read_to_string(&path).unwrap(), "hello\n");
        let mode = fs_err::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
