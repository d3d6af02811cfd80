//! bangerd: the per-host daemon. See ARCHITECTURE.md for the code map.

pub mod agent_conn;
pub mod daemon;
pub mod doctor;
pub mod error;
pub mod failpoint;
pub mod host;
pub mod image;
pub mod net;
pub mod server;
pub mod ssh;
pub mod store;
pub mod vm;
pub mod vmm;

#[cfg(test)]
mod test_support;

pub use server::{serve, Deps};

/// Entry point of the `bangerd` binary: without arguments the daemon, `doctor` the host
/// report ([`doctor::main`]), `--failpoints` the kill points. A start-up failure is
/// printed as `error:` / `caused by:` lines (what `banger daemon start` shows from the
/// log), never a backtrace.
pub fn main_entry() -> std::process::ExitCode {
    use std::io::Write;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] => {}
        ["--failpoints"] => {
            // For the crash test: the kill points it iterates, one a line.
            let mut out = std::io::stdout().lock();
            for p in failpoint::POINTS {
                let _ = writeln!(out, "{p}");
            }
            return std::process::ExitCode::SUCCESS;
        }
        ["doctor", flags @ ..] if flags.iter().all(|f| ["--json", "--color"].contains(f)) => {
            return doctor::main(flags.contains(&"--json"), flags.contains(&"--color"));
        }
        _ => {
            let _ = writeln!(
                std::io::stderr().lock(),
                "error: unexpected arguments {args:?}\n\
                 usage: bangerd | bangerd doctor [--json] [--color] | bangerd --failpoints"
            );
            return std::process::ExitCode::from(2);
        }
    }
    if std::env::args().nth(1).as_deref() == Some("openapi") {
        // The public API's OpenAPI document, as `GET /api/v1/openapi.json` serves it.
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), "{}", server::document_json());
        return std::process::ExitCode::SUCCESS;
    }
    vm::process::close_inherited_on_exec();
    match daemon::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let mut err = std::io::stderr().lock();
            let mut chain = e.chain();
            if let Some(top) = chain.next() {
                let _ = writeln!(err, "error: {top}");
            }
            for cause in chain {
                let _ = writeln!(err, "caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
