//! Tool answers: structured content with an output schema, plus the same JSON as text.

use banger_wire::agent::{DetachedInfo, DetachedState};
use banger_wire::api::VmInfo;
use base64::Engine;
use schemars::JsonSchema;
use serde::Serialize;

use super::capture::{Collected, Ending};
use super::params::Encoding;
use crate::workspace;

#[derive(Debug, Serialize, JsonSchema)]
pub struct Vm {
    pub name: String,
    /// stopped, starting, running, stopping or crashed.
    pub state: String,
    pub image: String,
    pub vcpu: u32,
    pub memory_mib: u32,
    pub disk_size_mib: u64,
    /// The guest's address on the host network, if it has one.
    pub ip: Option<String>,
    /// Why the VM last crashed, if it did.
    pub last_error: Option<String>,
    /// When the VM is deleted by its `ttl` (RFC 3339), if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Seconds unused after which the VM is deleted, if it has an idle timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
}

impl From<VmInfo> for Vm {
    fn from(v: VmInfo) -> Vm {
        Vm {
            name: v.name,
            state: v.state.as_str().into(),
            image: v.image,
            vcpu: v.vcpu,
            memory_mib: v.memory_mib,
            disk_size_mib: v.disk_size_mib,
            ip: v.ip,
            last_error: v.last_error,
            expires_at: v.expires_at,
            idle_timeout_secs: v.idle_timeout_secs,
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct VmList {
    pub vms: Vec<Vm>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Deleted {
    /// The VM that no longer exists.
    pub deleted: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ExecOutput {
    /// The command's exit code (128+N when killed by signal N); null when it timed out.
    pub exit_code: Option<i32>,
    /// true when the command ran past its timeout and was killed with its process group.
    pub timed_out: bool,
    /// Standard output as UTF-8 (invalid bytes replaced), at most `output_cap_bytes`.
    pub stdout: String,
    /// Standard error as UTF-8 (invalid bytes replaced), at most `output_cap_bytes`.
    pub stderr: String,
    /// true when stdout or stderr was longer than the cap and only its start is shown.
    pub truncated: bool,
    /// Bytes the command wrote to stdout in all, shown or not.
    pub stdout_bytes: u64,
    /// Bytes the command wrote to stderr in all, shown or not.
    pub stderr_bytes: u64,
    /// How many bytes of each stream an answer keeps.
    pub output_cap_bytes: u64,
    /// What happened, in words, when it was not a plain exit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// With `detach`: the command, started and running on its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detached: Option<Detached>,
}

impl ExecOutput {
    /// The answer of an `exec` with `detach`: the command, no output yet.
    pub fn detached(command: Detached) -> ExecOutput {
        ExecOutput {
            exit_code: None,
            timed_out: false,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            stdout_bytes: 0,
            stderr_bytes: 0,
            output_cap_bytes: 0,
            note: Some(format!(
                "started detached as {}; fetch its output with exec_output",
                command.id
            )),
            detached: Some(command),
        }
    }
}

impl From<Collected> for ExecOutput {
    fn from(c: Collected) -> ExecOutput {
        let (exit_code, note) = match c.ending {
            Ending::Exited(code) => (Some(code), None),
            Ending::TimedOut(message) => (None, Some(message)),
        };
        let truncated = c.stdout.truncated() || c.stderr.truncated();
        let note = match (note, truncated) {
            (None, true) => Some(format!(
                "output over {} bytes per stream was cut; redirect it to a file and use read_file, or filter it (e.g. `| tail -n 200`)",
                c.stdout.cap
            )),
            (note, _) => note,
        };
        ExecOutput {
            exit_code,
            timed_out: exit_code.is_none(),
            stdout: c.stdout.text(),
            stderr: c.stderr.text(),
            truncated,
            stdout_bytes: c.stdout.total,
            stderr_bytes: c.stderr.total,
            output_cap_bytes: c.stdout.cap as u64,
            note,
            detached: None,
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Written {
    pub path: String,
    /// Bytes written.
    pub bytes: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FileContent {
    pub path: String,
    /// "text" or "base64": how `content` is encoded (text falls back to base64 for bytes
    /// that are not UTF-8).
    pub encoding: String,
    pub content: String,
    /// Bytes of the file in `content`.
    pub bytes: u64,
    /// true when the file is longer than `max_bytes` and only its start is here.
    pub truncated: bool,
}

impl FileContent {
    /// `data` (the file's first bytes) encoded as asked; a UTF-8 sequence cut by the
    /// size limit is dropped from the end rather than turning the answer into base64.
    pub fn new(path: &str, mut data: Vec<u8>, truncated: bool, want: Encoding) -> FileContent {
        if want == Encoding::Text && truncated {
            if let Err(e) = std::str::from_utf8(&data) {
                if e.error_len().is_none() {
                    data.truncate(e.valid_up_to());
                }
            }
        }
        let bytes = data.len() as u64;
        let (encoding, content) = match (want, String::from_utf8(data)) {
            (Encoding::Text, Ok(text)) => ("text", text),
            (_, Ok(text)) => ("base64", b64(text.as_bytes())),
            (_, Err(e)) => ("base64", b64(e.as_bytes())),
        };
        FileContent {
            path: path.into(),
            encoding: encoding.into(),
            content,
            bytes,
            truncated,
        }
    }
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Prepared {
    pub vm: String,
    /// Where the repository's top is in the guest.
    pub dest: String,
    /// The guest directory matching the host path given (below `dest` when the path
    /// was a subdirectory of the repository): run commands there.
    pub workdir: String,
    /// Files and symlinks shipped.
    pub files: usize,
    /// Nested git repositories left out.
    pub skipped: Vec<String>,
}

impl Prepared {
    pub fn new(vm: &str, p: workspace::Prepared) -> Prepared {
        Prepared {
            vm: vm.into(),
            dest: p.dest,
            workdir: p.workdir,
            files: p.shipped.files,
            skipped: p
                .shipped
                .skipped
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Exported {
    pub vm: String,
    /// The changes as a `git diff --binary` patch against the shipped HEAD commit, for
    /// `git apply` on a clean checkout; empty when nothing changed. Absent when
    /// written to `output`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// The host file the patch was written to, when `output` was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Size of the patch in bytes.
    pub bytes: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RunOutput {
    /// The throwaway VM the command ran in; it has been deleted.
    pub vm: String,
    /// Files shipped from `repo`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipped_files: Option<usize>,
    #[serde(flatten)]
    pub exec: ExecOutput,
    /// With `export`: the command's changes as a `git diff --binary` patch against the
    /// shipped HEAD commit; empty when nothing changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// With `apply`: what was applied to the host repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<Applied>,
    /// Why the changes did not come back (`export` or `apply`); the host repository is
    /// as it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_error: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Applied {
    /// Files changed in the host working tree (the conflicted ones, when conflicts are
    /// left).
    pub files: usize,
    /// true when the changes needed a 3-way merge.
    pub three_way: bool,
    /// Files left with conflict markers to resolve; empty when the merge was clean.
    pub conflicts: Vec<String>,
}

impl From<workspace::Applied> for Applied {
    fn from(a: workspace::Applied) -> Applied {
        match a {
            workspace::Applied::Clean { files, three_way } => Applied {
                files,
                three_way,
                conflicts: Vec::new(),
            },
            workspace::Applied::Conflicts { paths } => Applied {
                files: paths.len(),
                three_way: true,
                conflicts: paths,
            },
        }
    }
}

/// A command started with `exec` and `detach: true`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Detached {
    pub id: String,
    /// Its pid in the guest.
    pub pid: u32,
    pub command: Vec<String>,
    /// Guest clock at its start, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// "running" or "exited".
    pub state: String,
    /// Once exited: its exit code (128+N when killed by signal N; 124 when its timeout
    /// killed it).
    pub exit_code: Option<i32>,
    pub timed_out: bool,
}

impl From<DetachedInfo> for Detached {
    fn from(d: DetachedInfo) -> Detached {
        Detached {
            id: d.id,
            pid: d.pid,
            command: d.argv,
            started_at_ms: d.started_at_ms,
            state: match d.state {
                DetachedState::Running => "running".into(),
                DetachedState::Exited => "exited".into(),
            },
            exit_code: d.exit_code,
            timed_out: d.timed_out,
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DetachedList {
    pub commands: Vec<Detached>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DetachedOutput {
    /// Its state after the output below.
    pub command: Detached,
    /// Standard output as UTF-8 (invalid bytes replaced), at most `output_cap_bytes`.
    pub stdout: String,
    /// Standard error as UTF-8 (invalid bytes replaced), at most `output_cap_bytes`.
    pub stderr: String,
    /// true when stdout or stderr was longer than the cap and only its start is shown.
    pub truncated: bool,
    /// Older output the guest dropped (it keeps the newest 4 to 8 MiB).
    pub dropped_bytes: u64,
    pub output_cap_bytes: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::mcp::capture::Capped;

    fn capped(data: &[u8], cap: usize) -> Capped {
        let mut c = Capped::new(cap);
        c.push(data);
        c
    }

    #[test]
    fn an_exit_reports_its_code_and_sizes() {
        let out = ExecOutput::from(Collected {
            ending: Ending::Exited(3),
            stdout: capped(b"hello", 8),
            stderr: capped(b"", 8),
        });

        assert_eq!(
            (out.exit_code, out.timed_out, out.truncated),
            (Some(3), false, false)
        );
        assert_eq!((out.stdout.as_str(), out.stdout_bytes), ("hello", 5));
        assert_eq!(out.note, None);
    }

    #[test]
    fn cut_output_is_flagged_with_the_cap() {
        let out = ExecOutput::from(Collected {
            ending: Ending::Exited(0),
            stdout: capped(b"0123456789", 4),
            stderr: capped(b"", 4),
        });

        assert_eq!((out.stdout.as_str(), out.stdout_bytes), ("0123", 10));
        assert_eq!((out.truncated, out.output_cap_bytes), (true, 4));
        assert!(out.note.unwrap().contains("4 bytes"));
    }

    #[test]
    fn a_timeout_has_no_exit_code_and_says_so() {
        let out = ExecOutput::from(Collected {
            ending: Ending::TimedOut("command timed out after 2s and was killed".into()),
            stdout: capped(b"so far", 64),
            stderr: capped(b"", 64),
        });

        assert_eq!((out.exit_code, out.timed_out), (None, true));
        assert_eq!(
            out.note.as_deref(),
            Some("command timed out after 2s and was killed")
        );
        assert_eq!(out.stdout, "so far");
    }

    #[test]
    fn binary_file_content_falls_back_to_base64() {
        let f = FileContent::new("/b", vec![0xff, 0x00, 0x41], false, Encoding::Text);

        assert_eq!(
            (f.encoding.as_str(), f.content.as_str(), f.bytes),
            ("base64", "/wBB", 3)
        );
    }

    #[test]
    fn a_utf8_character_cut_by_the_limit_is_dropped_not_mangled() {
        // "aé" is 61 c3 a9; the limit kept only 61 c3.
        let f = FileContent::new("/t", vec![0x61, 0xc3], true, Encoding::Text);

        assert_eq!(
            (f.encoding.as_str(), f.content.as_str(), f.bytes),
            ("text", "a", 1)
        );
    }

    #[test]
    fn base64_is_given_when_asked_for() {
        let f = FileContent::new("/t", b"hi".to_vec(), false, Encoding::Base64);

        assert_eq!(
            (f.encoding.as_str(), f.content.as_str()),
            ("base64", "aGk=")
        );
    }
}
