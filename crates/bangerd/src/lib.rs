//! bangerd: the per-host daemon. See ARCHITECTURE.md for the code map.

pub mod agent_conn;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod error;
pub mod failpoint;
pub mod host;
pub mod image;
pub(crate) mod image_api;
mod logs;
pub mod net;
pub mod private_dir;
pub mod server;
pub mod ssh;
pub mod store;
pub mod vm;
pub mod vmm;

#[cfg(test)]
mod test_support;

pub use server::{serve, Deps};

/// Entry point of the `bangerd` binary. A start-up failure is printed as `error:` /
/// `caused by:` lines (what `banger daemon start` shows from the log), never a backtrace.
pub fn main_entry() -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--failpoints") {
        // For the crash test: the kill points it iterates, one a line.
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        for p in failpoint::POINTS {
            let _ = writeln!(out, "{p}");
        }
        return std::process::ExitCode::SUCCESS;
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
            use std::io::Write;
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
