//! `banger`: the CLI. Parses arguments, talks to `bangerd`, renders results.

mod cli;
mod client;
mod cmd;
mod cp;
mod detached;
mod duration;
mod env;
mod error;
mod exec;
mod exec_stream;
mod mcp;
mod output;
mod pipe;
mod progress;
mod registry;
mod run;
mod slurm;
mod ssh;
mod transfer;
mod vm;
mod workspace;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => std::process::exit(output::fail(&error::CliError::from(e))),
    };
    let code = match rt.block_on(cmd::run(cli)) {
        Ok(code) => code,
        Err(e) => output::fail(&e),
    };
    // Do not wait for blocking stdin readers: the exit code is known.
    rt.shutdown_background();
    std::process::exit(code);
}
