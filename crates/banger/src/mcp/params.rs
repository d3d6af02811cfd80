//! Tool arguments as a model sends them: JSON objects whose schemas (field docs
//! included) are what `tools/list` shows. Unknown fields are refused, so a misspelt
//! argument fails loudly instead of being ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;

use banger_wire::agent::ExecSpec;
use banger_wire::user::GuestUser;
use banger_wire::Diagnostic;
use schemars::JsonSchema;
use serde::Deserialize;

use super::error::ToolError;

/// Longest `timeout_secs` a command may ask for.
pub const MAX_TIMEOUT_SECS: u64 = 6 * 3600;
/// `timeout_secs` when none is given.
pub const DEFAULT_TIMEOUT_SECS: u64 = 600;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmCreateArgs {
    /// Name for the new VM (a DNS label: lowercase letters, digits, `-`). Generated when absent.
    pub name: Option<String>,
    /// Image to boot (see `banger image list`); the daemon's default image when absent.
    pub image: Option<String>,
    /// Virtual CPUs; the configured default when absent.
    pub vcpu: Option<u32>,
    /// Memory in MiB; the configured default when absent.
    pub memory_mib: Option<u32>,
    /// Writable disk capacity in MiB; the configured default when absent.
    pub disk_size_mib: Option<u64>,
    /// true: give the VM no network interface at all.
    #[serde(default)]
    pub no_network: bool,
    /// Delete the VM this long after it is created, e.g. "30m", "2h" or "90" (seconds),
    /// even if nobody deletes it (also across daemon restarts).
    pub ttl: Option<String>,
    /// The user the VM's commands run as unless `exec` names another: "NAME" or
    /// "NAME:UID", created in the guest on first use with a home in /home; root when
    /// absent.
    pub user: Option<String>,
    /// Delete the VM once nothing has used it for this many seconds (no command
    /// running, no call naming it).
    pub idle_timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmNameArgs {
    /// The VM's name, as `vm_create` or `vm_list` report it.
    pub name: String,
}

/// What to run: exactly one of `command` and `shell`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecArgs {
    /// Name of a running VM.
    pub vm: String,
    /// The program and its arguments, passed to the guest exactly as given (no shell,
    /// no word splitting, no globbing), e.g. ["ls", "-la", "/root"].
    pub command: Option<Vec<String>>,
    /// A shell command line run as `sh -c SHELL`, for pipes, redirections and `&&`,
    /// e.g. "cd /root/repo && make test 2>&1 | tail -n 50".
    pub shell: Option<String>,
    /// Working directory in the guest (absolute); the user's home (/root) when absent.
    pub cwd: Option<String>,
    /// Extra environment variables, e.g. {"RUST_LOG": "debug"}.
    pub env: Option<BTreeMap<String, String>>,
    /// Text fed to the command's standard input (then end of input). Without it the
    /// command sees an empty stdin.
    pub stdin: Option<String>,
    /// Kill the command (its whole process group) after this many seconds; default 600,
    /// at most 21600. A killed command answers with `timed_out: true` and the output it
    /// wrote so far.
    pub timeout_secs: Option<u64>,
    /// Run as this user ("NAME" or "NAME:UID", created in the guest when missing);
    /// the VM's default user (from vm_create) when absent, else root. The command
    /// starts in the user's home unless `cwd` says otherwise.
    pub user: Option<String>,
    /// Start the command in the background and answer at once with its `id` (then
    /// `ps` lists it and `exec_output` fetches its output). It has no timeout unless
    /// `timeout_secs` is given, and `stdin` is refused.
    pub detach: Option<bool>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// UTF-8 text.
    #[default]
    Text,
    /// Base64 (standard alphabet, padded): any bytes.
    Base64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteFileArgs {
    /// Name of a running VM.
    pub vm: String,
    /// Absolute path of the file in the guest. Missing parent directories are
    /// created; an existing file is replaced.
    pub path: String,
    /// The whole new content of the file.
    pub content: String,
    /// How `content` is encoded: "text" (default) or "base64" for binary data.
    #[serde(default)]
    pub encoding: Encoding,
    /// Permission bits in octal, e.g. "755" or "0600"; left as the guest's default
    /// (usually 644 for a new file) when absent.
    pub mode: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadFileArgs {
    /// Name of a running VM.
    pub vm: String,
    /// Absolute path of the file in the guest.
    pub path: String,
    /// Read at most this many bytes (default and maximum 1048576); the answer says
    /// `truncated: true` when the file is longer.
    pub max_bytes: Option<usize>,
    /// "text" (default; falls back to base64 when the bytes are not UTF-8) or "base64".
    #[serde(default)]
    pub encoding: Encoding,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspacePrepareArgs {
    /// Name of a running VM.
    pub vm: String,
    /// Absolute host path of a git repository (or a directory in one), inside a
    /// directory the server was started with `--allow-path`.
    pub path: PathBuf,
    /// Also ship untracked files that are not ignored (default false: tracked files
    /// only, as they are in the working tree, uncommitted edits included).
    #[serde(default)]
    pub include_untracked: bool,
    /// Where the repository goes in the guest (absolute, must be empty or missing);
    /// default "/root/repo", or "/home/NAME/repo" in a VM created with `user` NAME.
    pub dest: Option<String>,
    /// Ship HEAD's whole git history (default false: HEAD's commit alone, as a shallow
    /// repository, which is much faster for a long history).
    #[serde(default)]
    pub history: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceExportArgs {
    /// Name of a VM that `workspace_prepare` shipped a repository into.
    pub vm: String,
    /// Where the repository is in the guest; default where workspace_prepare puts it.
    pub dest: Option<String>,
    /// Absolute host file to write the patch to instead of returning it inline (needed
    /// for patches over 4 MiB): a `.patch` or `.diff` file inside an allowed directory,
    /// not in `.git`.
    pub output: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunArgs {
    /// The program and its arguments, passed exactly as given (see `exec`).
    pub command: Option<Vec<String>>,
    /// A shell command line run as `sh -c SHELL` (see `exec`).
    pub shell: Option<String>,
    /// Absolute host path of a git repository to ship into the VM first (inside an
    /// allowed directory); the command then runs in the repository's directory.
    pub repo: Option<PathBuf>,
    /// With `repo`: also ship untracked files that are not ignored.
    #[serde(default)]
    pub include_untracked: bool,
    /// Image to boot; the daemon's default when absent.
    pub image: Option<String>,
    /// Virtual CPUs.
    pub vcpu: Option<u32>,
    /// Memory in MiB.
    pub memory_mib: Option<u32>,
    /// Working directory in the guest; with `repo` the repository's directory by default.
    pub cwd: Option<String>,
    /// Extra environment variables.
    pub env: Option<BTreeMap<String, String>>,
    /// Text fed to the command's standard input.
    pub stdin: Option<String>,
    /// Kill the command after this many seconds (default 600, at most 21600).
    pub timeout_secs: Option<u64>,
    /// Delete the VM this long after it is created even if this call is still running,
    /// e.g. "30m" (a safety net: the VM is deleted when the call ends anyway).
    pub ttl: Option<String>,
    /// Delete the VM once nothing has used it for this many seconds (a safety net like
    /// `ttl`: the command keeps it in use, and the call's end deletes it anyway).
    pub idle_timeout_secs: Option<u64>,
    /// With `repo`: once the command ends (also when it fails or times out), answer with
    /// the changes it made as a git patch against the shipped HEAD commit (`patch`, for
    /// `git apply` on a clean checkout, new files included; at most 4 MiB).
    #[serde(default)]
    pub export: bool,
    /// With `repo`: once the command ends, apply the changes it made to the host
    /// repository's working tree. A patch with paths outside the repository, in .git or
    /// through symlinks is refused and nothing is written; changes that do not apply
    /// cleanly get a 3-way merge (conflicts are listed).
    #[serde(default)]
    pub apply: bool,
    /// With `repo`: ship HEAD's whole git history (default false: HEAD's commit alone,
    /// as a shallow repository).
    #[serde(default)]
    pub history: bool,
    /// Run as this user ("NAME" or "NAME:UID", created in the guest); root when
    /// absent. With `repo`, the repository goes to /home/NAME/repo, owned by it.
    pub user: Option<String>,
    /// Restore a fresh clone of the image's warm snapshot instead of taking a paused
    /// one from the daemon's pool (like `vm run --no-pool`).
    #[serde(default)]
    pub no_pool: bool,
}

/// A command as `exec` and `run` take it, checked.
#[derive(Debug)]
pub struct Command {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The guest's working directory; the agent's default (/root) when absent.
    pub cwd: Option<String>,
    pub timeout_secs: u64,
    /// Who runs it; the VM's default user when absent.
    pub user: Option<GuestUser>,
}

impl Command {
    /// The command run in the agent's default directory; set `cwd` for another.
    pub fn new(
        command: Option<Vec<String>>,
        shell: Option<String>,
        env_vars: Option<BTreeMap<String, String>>,
        timeout: Option<u64>,
    ) -> Result<Command, ToolError> {
        Ok(Command {
            argv: argv(command, shell)?,
            env: env(env_vars)?,
            cwd: None,
            timeout_secs: timeout_secs(timeout)?,
            user: None,
        })
    }

    /// What the agent runs: no terminal, killed at the timeout.
    pub fn spec(self) -> ExecSpec {
        ExecSpec {
            argv: self.argv,
            env: self.env,
            cwd: self.cwd,
            tty: None,
            timeout_ms: Some(self.timeout_secs * 1000),
            user: self.user,
        }
    }
}

/// A `user` argument, checked as `--user` is.
pub fn user(text: Option<&str>) -> Result<Option<GuestUser>, ToolError> {
    text.map(|t| {
        t.parse::<GuestUser>()
            .map_err(|e| ToolError::invalid(e.to_string(), e.hint().as_deref()))
    })
    .transpose()
}

/// The argv to run: `command` as is, or `shell` under `sh -c`.
pub fn argv(command: Option<Vec<String>>, shell: Option<String>) -> Result<Vec<String>, ToolError> {
    match (command, shell) {
        (Some(argv), None) if argv.first().is_some_and(|p| !p.is_empty()) => Ok(argv),
        (Some(_), None) => Err(ToolError::invalid(
            "`command` must start with a program name",
            Some("e.g. [\"ls\", \"-la\"]"),
        )),
        (None, Some(line)) if !line.trim().is_empty() => Ok(vec!["sh".into(), "-c".into(), line]),
        (None, Some(_)) => Err(ToolError::invalid("`shell` is empty", None)),
        (Some(_), Some(_)) => Err(ToolError::invalid(
            "give either `command` or `shell`, not both",
            Some("`command` is an argv array run as is; `shell` is one string run by `sh -c`"),
        )),
        (None, None) => Err(ToolError::invalid(
            "nothing to run: give `command` (an argv array) or `shell` (a string)",
            None,
        )),
    }
}

/// Environment pairs; names must be non-empty and free of `=` and NUL.
pub fn env(env: Option<BTreeMap<String, String>>) -> Result<Vec<(String, String)>, ToolError> {
    let env = env.unwrap_or_default();
    for (k, v) in &env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(ToolError::invalid(
                format!("invalid environment variable name {k:?}"),
                Some("names are non-empty and contain no `=`"),
            ));
        }
    }
    Ok(env.into_iter().collect())
}

/// The timeout in seconds: the default when absent, 1..=MAX otherwise.
pub fn timeout_secs(t: Option<u64>) -> Result<u64, ToolError> {
    match t.unwrap_or(DEFAULT_TIMEOUT_SECS) {
        t @ 1..=MAX_TIMEOUT_SECS => Ok(t),
        t => Err(ToolError::invalid(
            format!("timeout_secs {t} is out of range"),
            Some("use 1 to 21600 seconds"),
        )),
    }
}

/// A `ttl` argument in seconds.
pub fn ttl_secs(ttl: Option<&str>) -> Result<Option<u64>, ToolError> {
    ttl.map(|t| {
        crate::duration::parse(t)
            .map(|d| d.as_secs())
            .map_err(|e| ToolError::invalid(format!("ttl: {e}"), Some("e.g. \"30m\" or \"2h\"")))
    })
    .transpose()
}

/// Permission bits from octal text: 1 to 4 digits 0-7.
pub fn mode(mode: &str) -> Result<String, ToolError> {
    let digits = mode.strip_prefix("0o").unwrap_or(mode);
    if (1..=4).contains(&digits.len()) && digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Ok(digits.to_string());
    }
    Err(ToolError::invalid(
        format!("mode {mode:?} is not octal permission bits"),
        Some("e.g. \"644\", \"755\" or \"0600\""),
    ))
}

/// A guest path the file tools accept: absolute, no NUL.
pub fn guest_path(path: &str) -> Result<&str, ToolError> {
    if path.starts_with('/') && !path.contains('\0') {
        return Ok(path);
    }
    Err(ToolError::invalid(
        format!("guest path {path:?} is not absolute"),
        Some("give the full path, e.g. /root/notes.txt"),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_command_array_is_passed_exactly() {
        let got = argv(Some(s(&["printf", "[%s]", "a b", "$HOME", ""])), None).unwrap();

        assert_eq!(got, s(&["printf", "[%s]", "a b", "$HOME", ""]));
    }

    #[test]
    fn a_shell_line_runs_under_sh_c() {
        let got = argv(None, Some("exit 3".into())).unwrap();

        assert_eq!(got, s(&["sh", "-c", "exit 3"]));
    }

    #[test]
    fn both_neither_or_empty_commands_are_refused() {
        assert!(argv(Some(s(&["true"])), Some("true".into())).is_err());
        assert!(argv(None, None).is_err());
        assert!(argv(Some(vec![]), None).is_err());
        assert!(argv(Some(s(&[""])), None).is_err());
        assert!(argv(None, Some("  ".into())).is_err());
    }

    #[test]
    fn exec_args_parse_from_json_and_refuse_unknown_fields() {
        let ok: ExecArgs = serde_json::from_value(serde_json::json!({
            "vm": "dev", "command": ["sh", "-c", "exit 3"], "env": {"A": "1"}, "timeout_secs": 5
        }))
        .unwrap();
        let unknown = serde_json::from_value::<ExecArgs>(serde_json::json!({
            "vm": "dev", "cmd": ["true"]
        }));

        assert_eq!(ok.command.unwrap(), s(&["sh", "-c", "exit 3"]));
        assert_eq!(env(ok.env).unwrap(), vec![("A".into(), "1".into())]);
        assert!(unknown.unwrap_err().to_string().contains("cmd"));
    }

    #[test]
    fn encoding_names_are_lowercase() {
        let args: WriteFileArgs = serde_json::from_value(serde_json::json!({
            "vm": "dev", "path": "/x", "content": "aGk=", "encoding": "base64"
        }))
        .unwrap();

        assert_eq!(args.encoding, Encoding::Base64);
    }

    #[test]
    fn env_names_with_equals_are_refused() {
        let bad = BTreeMap::from([("A=B".to_string(), "x".to_string())]);

        assert!(env(Some(bad)).is_err());
    }

    #[test]
    fn timeouts_default_and_are_bounded() {
        assert_eq!(timeout_secs(None).unwrap(), DEFAULT_TIMEOUT_SECS);
        assert_eq!(timeout_secs(Some(1)).unwrap(), 1);
        assert!(timeout_secs(Some(0)).is_err());
        assert!(timeout_secs(Some(MAX_TIMEOUT_SECS + 1)).is_err());
    }

    #[test]
    fn ttls_are_durations() {
        assert_eq!(ttl_secs(None).unwrap(), None);
        assert_eq!(ttl_secs(Some("30m")).unwrap(), Some(1800));
        assert!(ttl_secs(Some("soon")).is_err());
    }

    #[test]
    fn modes_are_octal_digits() {
        assert_eq!(mode("755").unwrap(), "755");
        assert_eq!(mode("0600").unwrap(), "0600");
        assert_eq!(mode("0o644").unwrap(), "644");
        assert!(mode("rwx").is_err());
        assert!(mode("888").is_err());
        assert!(mode("").is_err());
        assert!(mode("-R 777").is_err());
    }

    #[test]
    fn guest_paths_must_be_absolute() {
        assert!(guest_path("/root/a").is_ok());
        assert!(guest_path("root/a").is_err());
        assert!(guest_path("-rf").is_err());
    }
}
