//! Everything the CLI prints goes through here: data on stdout, diagnostics on stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use banger_wire::Diagnostic;

use crate::error::CliError;

/// Whether to colour stderr: a terminal, and `NO_COLOR` unset.
pub fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// Whether to colour stdout.
pub fn color_stdout() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

fn paint(code: &str, s: &str) -> String {
    if color() {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

/// `text` with every control character but newline and tab written as an escape
/// (`\x1b`, `\u{9b}`): text a guest chose (console tails, agent errors, file names)
/// cannot move the cursor, retitle or clear the terminal.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        let n = u32::from(c);
        if !unsafe_char(c) {
            out.push(c);
        } else if n < 0x80 {
            let _ = write!(out, "\\x{n:02x}");
        } else {
            let _ = write!(out, "\\u{{{n:x}}}");
        }
    }
    Cow::Owned(out)
}

/// Renders an error as `error: …` / `caused by: …` / `hint: …`, control characters
/// escaped (the daemon's errors carry guest output).
pub fn render_error(e: &dyn Diagnostic, color: bool) -> String {
    let p = |code: &str, s: &str| {
        if color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.into()
        }
    };
    let mut out = format!(
        "{} {}\n",
        p("1;31", "error:"),
        escape_controls(&e.to_string())
    );
    for cause in e.chain() {
        for (i, line) in cause.lines().enumerate() {
            let line = escape_controls(line);
            if i == 0 {
                out.push_str(&format!("{} {line}\n", p("33", "caused by:")));
            } else {
                out.push_str(&format!("  {line}\n"));
            }
        }
    }
    if let Some(h) = e.hint() {
        out.push_str(&format!("{} {}\n", p("36", "hint:"), escape_controls(&h)));
    }
    out
}

/// Prints the error and returns the exit code.
pub fn fail(e: &CliError) -> i32 {
    eprint!("{}", render_error(e, color()));
    e.code().exit_code()
}

/// `--quiet`: set once, from the command line.
static QUIET: AtomicBool = AtomicBool::new(false);

pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether `--quiet` asked for no progress and no [`info`] lines.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// A diagnostic line on stderr, control characters escaped.
pub fn note(msg: &str) {
    eprintln!("{} {}", paint("2", "banger:"), escape_controls(msg));
}

/// A [`note`] that only informs (what was shipped, written, applied): not under
/// `--quiet`.
pub fn info(msg: &str) {
    if !quiet() {
        note(msg);
    }
}

pub fn data(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    if !s.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
}

/// Writes text to stdout as is (console logs).
pub fn raw(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

pub fn json<T: serde::Serialize>(v: &T) -> Result<(), CliError> {
    data(&serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A left-aligned table with a header row.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_wire::{ErrorCode, WireError};

    #[test]
    fn error_renders_message_chain_and_hint() {
        let e = CliError::Remote(WireError {
            code: ErrorCode::VmmFailed,
            message: "vm \"web\": the vmm failed".into(),
            chain: vec!["qemu refused the request: bad drive".into()],
            hint: Some("see `banger vm logs web`".into()),
        });
        assert_eq!(
            render_error(&e, false),
            "error: vm \"web\": the vmm failed\n\
             caused by: qemu refused the request: bad drive\n\
             hint: see `banger vm logs web`\n"
        );
    }

    #[test]
    fn control_characters_are_escaped_but_newlines_and_tabs_stay() {
        let text = "a\tb\nc\x1b]0;owned\x07\r\x7f\u{9b}2J é";

        assert_eq!(
            escape_controls(text),
            "a\tb\nc\\x1b]0;owned\\x07\\x0d\\x7f\\u{9b}2J é"
        );
        assert!(matches!(escape_controls("plain ü"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_console_tail_in_an_error_cannot_drive_the_terminal() {
        let e = CliError::Remote(WireError {
            code: ErrorCode::VmmFailed,
            message: "vm \"web\" crashed\x1b[2J".into(),
            chain: vec!["console:\n\x1b]0;pwned\x07login:".into()],
            hint: Some("see \x1b[8m`banger vm logs web`".into()),
        });

        let rendered = render_error(&e, false);

        assert!(
            !rendered.contains('\x1b') && !rendered.contains('\x07'),
            "{rendered:?}"
        );
        assert_eq!(
            rendered,
            "error: vm \"web\" crashed\\x1b[2J\n\
             caused by: console:\n  \\x1b]0;pwned\\x07login:\n\
             hint: see \\x1b[8m`banger vm logs web`\n"
        );
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(&["NAME", "STATE"], &[vec!["web".into(), "running".into()]]);
        assert_eq!(t, "NAME  STATE\nweb   running\n");
    }

    #[test]
    fn exit_code_follows_the_wire_code() {
        let e = CliError::Remote(WireError::new(ErrorCode::NotFound, "vm \"x\" not found"));
        assert_eq!(e.code().exit_code(), ErrorCode::NotFound.exit_code());
    }
}
