//! Running the host tools an image build needs (debootstrap, mkfs.ext4, dpkg-deb).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::error::{ImageError, IoContext};

/// Directories searched after `PATH`: a daemon started by a service manager may lack sbin.
const EXTRA_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];
/// How much of a failed tool's output an error carries.
const TAIL_BYTES: usize = 2000;

/// Finds a host tool; `package` names the Debian package that provides it.
pub(crate) fn tool(name: &'static str, package: &'static str) -> Result<PathBuf, ImageError> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or(ImageError::ToolMissing {
            tool: name,
            package,
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs_err::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn program_name(cmd: &Command) -> String {
    Path::new(cmd.get_program())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The last [`TAIL_BYTES`] of a tool's output, trimmed, as one string.
pub(crate) fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(TAIL_BYTES);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

/// Runs a command to completion; a non-zero exit becomes [`ImageError::Command`] with the
/// tail of its stderr (or stdout when stderr is empty).
pub(crate) fn run(cmd: &mut Command) -> Result<Vec<u8>, ImageError> {
    let program = program_name(cmd);
    tracing::debug!(command = ?cmd, "running");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .ctx(|| format!("run {program}"))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let detail = if out.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
        tail(&out.stderr)
    } else {
        tail(&out.stdout)
    };
    Err(ImageError::Command {
        program,
        status: out.status.to_string(),
        detail,
    })
}

/// Runs a command, handing each stdout line to `on_line` as it arrives. stderr is kept
/// for the error; `extra_detail` can add context (e.g. a log file's tail) on failure.
pub(crate) fn run_lines(
    cmd: &mut Command,
    on_line: &mut dyn FnMut(&str),
    extra_detail: &dyn Fn() -> Option<String>,
) -> Result<(), ImageError> {
    let program = program_name(cmd);
    tracing::debug!(command = ?cmd, "running");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ctx(|| format!("run {program}"))?;
    let stderr = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut s) = stderr {
            // A read error only shortens the diagnostic text.
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let mut last_lines: Vec<String> = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            on_line(&line);
            last_lines.push(line);
            if last_lines.len() > 20 {
                last_lines.remove(0);
            }
        }
    }
    let status = child.wait().ctx(|| format!("wait for {program}"))?;
    let stderr = err_reader.join().unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    let mut detail = tail(&stderr);
    if detail.is_empty() {
        detail = last_lines.join("\n");
    }
    if let Some(extra) = extra_detail() {
        detail = format!("{detail}\n{extra}");
    }
    Err(ImageError::Command {
        program,
        status: status.to_string(),
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_wire::Diagnostic;

    #[test]
    fn failing_command_reports_its_stderr() {
        let err = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sh failed"), "{text}");
        assert!(text.contains("boom"), "{text}");
    }

    #[test]
    fn lines_arrive_in_order() {
        let mut seen = Vec::new();
        run_lines(
            Command::new("sh").args(["-c", "echo one; echo two"]),
            &mut |l| seen.push(l.to_string()),
            &|| None,
        )
        .unwrap();
        assert_eq!(seen, ["one", "two"]);
    }

    #[test]
    fn missing_tool_names_its_package() {
        let err = tool("banger-no-such-tool", "banger-pkg").unwrap_err();
        assert_eq!(
            err.hint().unwrap(),
            "install it: apt-get install banger-pkg"
        );
    }
}
