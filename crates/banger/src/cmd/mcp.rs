//! `banger mcp [--allow-path DIR]...`: serve VMs as tools to an MCP client on stdio.

use std::path::PathBuf;

use banger_host::config::Paths;
use banger_wire::{ErrorCode, WireError};

use crate::error::CliError;
use crate::mcp::{self, AllowedRoots};

pub async fn run(paths: Paths, allow: &[PathBuf], scope: mcp::VmScope) -> Result<i32, CliError> {
    init_logging();
    let roots = AllowedRoots::new(allow).map_err(|e| {
        CliError::Remote(WireError::from_error(
            ErrorCode::InvalidArgument,
            &e,
            Some("--allow-path takes an existing directory".into()),
        ))
    })?;
    mcp::serve(paths, roots, scope)
        .await
        .map_err(|e| CliError::Remote(WireError::from_error(ErrorCode::Internal, &e, None)))?;
    Ok(0)
}

/// Logs go to stderr (stdout is the protocol), at `warn` unless `RUST_LOG` says more.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::path::PathBuf;

    use clap::Parser;

    use crate::cli::{Cli, Command};

    #[test]
    fn allow_path_repeats() {
        let cli =
            Cli::try_parse_from(["banger", "mcp", "--allow-path", "/a", "--allow-path", "/b"])
                .unwrap();

        let Command::Mcp { allow_path, .. } = cli.command else {
            panic!("not the mcp command: {:?}", cli.command);
        };
        assert_eq!(allow_path, [PathBuf::from("/a"), PathBuf::from("/b")]);
    }

    #[test]
    fn no_allow_path_is_fine() {
        let cli = Cli::try_parse_from(["banger", "mcp"]).unwrap();

        assert!(
            matches!(cli.command, Command::Mcp { allow_path, all_vms: false, .. } if allow_path.is_empty())
        );
    }
}
