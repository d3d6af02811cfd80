//! `banger vm exec -d`, `vm ps`, `vm kill` and `vm logs --exec`: detached commands.

use banger_wire::agent::{DetachedInfo, DetachedState, ExecSpec};
use tokio::io::AsyncWriteExt;

use crate::client::Client;
use crate::detached::{self, Output};
use crate::error::CliError;
use crate::output;

/// Starts `spec` detached and prints its id (or all of it as JSON).
pub async fn start(client: &Client, vm: &str, spec: ExecSpec, json: bool) -> Result<i32, CliError> {
    let info = detached::start(client, vm, spec).await?;
    if json {
        output::json(&info)?;
    } else {
        // The guest chose it: printed escaped, like everything else it says.
        output::data(&output::escape_controls(&info.id));
    }
    Ok(0)
}

pub async fn ps(client: &Client, vm: &str, json: bool) -> Result<i32, CliError> {
    let list = detached::list(client, vm).await?;
    if json {
        output::json(&list)?;
    } else {
        output::data(&table(&list, now_ms()));
    }
    Ok(0)
}

pub async fn kill(client: &Client, vm: &str, id: &str, signal: i32) -> Result<i32, CliError> {
    detached::kill(client, vm, id, signal).await?;
    Ok(0)
}

/// Prints the command's output as a plain exec would (stdout to stdout, stderr to
/// stderr, bytes as they are), then a note when older output was dropped.
pub async fn logs(client: &Client, vm: &str, id: &str, follow: bool) -> Result<i32, CliError> {
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut outputs = detached::output(client, vm, id, follow).await?;
    let info = loop {
        match outputs.next().await? {
            Output::Stdout(d) => {
                stdout.write_all(&d).await?;
                stdout.flush().await?;
            }
            Output::Stderr(d) => {
                stderr.write_all(&d).await?;
                stderr.flush().await?;
            }
            Output::End(info) => break info,
        }
    };
    if info.dropped_bytes > 0 {
        output::note(&format!(
            "{} bytes of its oldest output were dropped (the guest keeps the newest {} MiB)",
            info.dropped_bytes,
            banger_wire::agent::DETACHED_OUTPUT_KEPT >> 20
        ));
    }
    Ok(0)
}

fn table(list: &[DetachedInfo], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            let state = match (d.state, d.exit_code) {
                (DetachedState::Running, _) => "running".to_string(),
                (DetachedState::Exited, Some(code)) if d.timed_out => {
                    format!("exited ({code}, timed out)")
                }
                (DetachedState::Exited, Some(code)) => format!("exited ({code})"),
                (DetachedState::Exited, None) => "exited".to_string(),
            };
            let ago = now_ms.saturating_sub(d.started_at_ms) / 1000;
            vec![
                output::escape_controls(&d.id).into_owned(),
                d.pid.to_string(),
                format!(
                    "{} ago",
                    crate::duration::display(std::time::Duration::from_secs(ago))
                ),
                state,
                output::escape_controls(&shell_words(&d.argv)).into_owned(),
            ]
        })
        .collect();
    output::table(&["ID", "PID", "STARTED", "STATE", "COMMAND"], &rows)
}

/// The argv as one line, words with spaces quoted.
fn shell_words(argv: &[String]) -> String {
    let word = |w: &String| {
        if !w.is_empty() && !w.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            w.clone()
        } else {
            format!("'{}'", w.replace('\'', r"'\''"))
        }
    };
    argv.iter().map(word).collect::<Vec<_>>().join(" ")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(state: DetachedState, exit_code: Option<i32>, timed_out: bool) -> DetachedInfo {
        DetachedInfo {
            id: "ab12cd34".into(),
            pid: 77,
            argv: vec!["sh".into(), "-c".into(), "sleep 5; echo \x1b[2J".into()],
            started_at_ms: 10_000,
            state,
            exit_code,
            timed_out,
            dropped_bytes: 0,
        }
    }

    #[test]
    fn the_table_shows_state_code_and_an_escaped_command() {
        let list = [
            info(DetachedState::Running, None, false),
            info(DetachedState::Exited, Some(124), true),
        ];

        let got = table(&list, 100_000);

        assert_eq!(
            got,
            "ID        PID  STARTED  STATE                    COMMAND\n\
             ab12cd34  77   90s ago  running                  sh -c 'sleep 5; echo \\x1b[2J'\n\
             ab12cd34  77   90s ago  exited (124, timed out)  sh -c 'sleep 5; echo \\x1b[2J'\n"
        );
    }
}
