use banger_wire::{Diagnostic, ErrorCode};

/// What went wrong between `vm run --slurm`, srun and the node.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("cannot run srun")]
    NoSrun(#[source] std::io::Error),
    /// The step ended (srun exited) before the node answered or before the run was
    /// over; `srun` carries srun's last lines.
    #[error("the slurm step ended {when} (srun {status})")]
    StepEnded {
        when: &'static str,
        status: String,
        srun: Vec<String>,
    },
    #[error("the slurm step's stdio failed")]
    Link(#[source] std::io::Error),
    #[error("`banger slurm node` runs as a Slurm step ($SLURM_JOB_ID is not set)")]
    NotAStep,
    #[error("the submit side speaks step protocol {theirs}, this node {ours}")]
    Protocol { theirs: u32, ours: u32 },
    #[error("bangerd {what} on node {node}: {detail}")]
    Daemon {
        what: &'static str,
        node: String,
        detail: String,
    },
    #[error("`bangerd doctor --json` gave a report this banger does not understand")]
    Doctor(#[source] serde_json::Error),
}

impl Diagnostic for SlurmError {
    fn code(&self) -> ErrorCode {
        match self {
            SlurmError::NoSrun(_) | SlurmError::StepEnded { .. } | SlurmError::Daemon { .. } => {
                ErrorCode::Unavailable
            }
            SlurmError::Link(_) => ErrorCode::HostFailed,
            SlurmError::NotAStep | SlurmError::Protocol { .. } => ErrorCode::InvalidArgument,
            SlurmError::Doctor(_) => ErrorCode::Internal,
        }
    }

    fn chain(&self) -> Vec<String> {
        match self {
            SlurmError::StepEnded { srun, .. } => srun.clone(),
            _ => banger_wire::error::causes(std::error::Error::source(self)),
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            SlurmError::NoSrun(_) => "install Slurm's client (Debian: slurm-client) and point \
                 SLURM_CONF at the cluster's slurm.conf"
                .into(),
            SlurmError::StepEnded { .. } => "srun's own lines say why; `sinfo -N -l` and \
                 `scontrol show node NODE` show whether the node's slurmd is up"
                .into(),
            SlurmError::Protocol { .. } => {
                "install the same banger version on the submit host and the nodes".into()
            }
            SlurmError::NotAStep => "use `banger vm run --slurm`, which starts it".into(),
            SlurmError::Daemon { .. } => "start the node's system daemon (`banger daemon \
                 start` as root there) and check `banger doctor`"
                .into(),
            SlurmError::Link(_) | SlurmError::Doctor(_) => return None,
        })
    }
}
