//! `banger vm exec NAME -- cmd args…`

use std::io::IsTerminal;
use std::time::Duration;

use banger_wire::agent::{ExecSpec, TIMED_OUT};
use banger_wire::api::ExecRequest;
use banger_wire::ErrorCode;

use crate::cli::{ExecArgs, ExecOpts};
use crate::client::Client;
use crate::error::CliError;

pub async fn run(client: &Client, args: ExecArgs) -> Result<i32, CliError> {
    let env = env(&args.opts)?;
    if args.detach {
        let spec = spec(&args.opts, env, args.command, None);
        return super::detached::start(client, &args.name, spec, args.json).await;
    }
    exec_in(client, &args.name, &args.opts, env, args.command, None).await
}

/// The agent's spec for `argv` with these options (a terminal of the local size with -t).
fn spec(
    opts: &ExecOpts,
    env: Vec<(String, String)>,
    argv: Vec<String>,
    default_cwd: Option<String>,
) -> ExecSpec {
    let tty = if opts.tty {
        Some(crate::exec::tty_size().unwrap_or(banger_wire::agent::TtySize { rows: 24, cols: 80 }))
    } else {
        None
    };
    ExecSpec {
        argv,
        env,
        cwd: opts.workdir.clone().or(default_cwd),
        tty,
        timeout_ms: opts.timeout.map(|t| t.as_millis() as u64),
        user: opts.user.clone(),
    }
}

/// The command's environment from `-e` and `--env-file`, read once, before any VM work.
pub fn env(opts: &ExecOpts) -> Result<Vec<(String, String)>, CliError> {
    crate::env::collect(&opts.env_file, &opts.env, &|k| std::env::var(k).ok())
        .map_err(CliError::failed)
}

/// Runs `argv` in VM `name` with the given options and environment; returns the guest
/// exit code.
pub async fn exec_in(
    client: &Client,
    name: &str,
    opts: &ExecOpts,
    env: Vec<(String, String)>,
    argv: Vec<String>,
    default_cwd: Option<String>,
) -> Result<i32, CliError> {
    let spec = spec(opts, env, argv, default_cwd);
    let io = client
        .exec(&ExecRequest {
            vm: name.to_string(),
            spec,
        })
        .await?;
    let forward_stdin = opts.interactive || opts.tty || !std::io::stdin().is_terminal();
    let ended = crate::exec::pump(io, opts.tty, forward_stdin).await;
    exit_code(ended, opts.timeout)
}

/// The exit code of an exec that ended so: the guest command's own, or [`TIMED_OUT`]
/// (with a line on stderr) when the agent killed it at the `limit` we asked for.
fn exit_code(ended: Result<i32, CliError>, limit: Option<Duration>) -> Result<i32, CliError> {
    match (ended, limit) {
        (Err(CliError::Remote(e)), Some(limit)) if e.code == ErrorCode::Timeout => {
            crate::output::note(&format!(
                "command timed out after {} and was killed",
                crate::duration::display(limit)
            ));
            Ok(TIMED_OUT)
        }
        (ended, _) => ended,
    }
}

#[cfg(test)]
mod tests {
    use banger_wire::{Diagnostic, WireError};

    use super::*;

    fn failed(code: ErrorCode) -> Result<i32, CliError> {
        Err(CliError::Remote(WireError::new(
            code,
            "command timed out after 2s",
        )))
    }

    #[test]
    fn a_command_killed_at_its_timeout_exits_124() {
        let got = exit_code(failed(ErrorCode::Timeout), Some(Duration::from_secs(2)));

        assert_eq!(got.unwrap(), 124);
    }

    #[test]
    fn other_endings_pass_through() {
        let own = exit_code(Ok(3), Some(Duration::from_secs(2)));
        let other = exit_code(failed(ErrorCode::NotFound), Some(Duration::from_secs(2)));
        let unasked = exit_code(failed(ErrorCode::Timeout), None);

        assert_eq!(own.unwrap(), 3);
        assert_eq!(other.unwrap_err().code(), ErrorCode::NotFound);
        assert_eq!(unasked.unwrap_err().code(), ErrorCode::Timeout);
    }
}
