//! `banger slurm conf|cleanup|node` (docs/slurm.md); `vm run --slurm` is in `run.rs`.

use crate::cli::SlurmCommand;
use crate::error::CliError;
use crate::slurm;

pub async fn run(cmd: SlurmCommand) -> Result<i32, CliError> {
    match cmd {
        SlurmCommand::Conf { slots } => slurm::conf::print(slots).await,
        SlurmCommand::Cleanup { job } => slurm::conf::cleanup(&job).await,
        SlurmCommand::Node => slurm::node::run().await,
    }
}
