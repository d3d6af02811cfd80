//! A node's side of the cluster's configuration: `banger slurm conf` prints its
//! slurm.conf and gres.conf lines, `banger slurm cleanup` (the epilog's) deletes the
//! VMs a job left.

use banger_wire::api::{Request, Response};
use banger_wire::slurm::vm_prefix;
use serde::Deserialize;

use super::SlurmError;
use crate::client::{self, Client};
use crate::error::CliError;
use crate::{output, vm};

/// What `bangerd doctor --json` says, as far as features go.
#[derive(Deserialize)]
struct Report {
    checks: Vec<Check>,
}

#[derive(Deserialize)]
struct Check {
    id: String,
    status: String,
}

/// The Slurm features a node has, from its doctor report: `kvm` when KVM runs guests
/// at speed, `firecracker` when Firecracker can run too, `qemu` when QEMU can.
fn features(report: &Report) -> Vec<&'static str> {
    let pass = |id: &str| {
        report
            .checks
            .iter()
            .any(|c| c.id == id && c.status == "pass")
    };
    let mut out = Vec::new();
    if pass("kvm") {
        out.push("kvm");
        if pass("firecracker") {
            out.push("firecracker");
        }
    }
    if pass("qemu") {
        out.push("qemu");
    }
    out
}

/// The `NodeName` line of slurm.conf and the line of gres.conf for this node.
fn lines(node: &str, cpus: usize, slots: u32, features: &[&str]) -> String {
    let feature = match features {
        [] => String::new(),
        f => format!(" Feature={}", f.join(",")),
    };
    format!(
        "# slurm.conf (and GresTypes=banger once)\n\
         NodeName={node} CPUs={cpus} Gres=banger:{slots}{feature}\n\
         # gres.conf\n\
         NodeName={node} Name=banger Count={slots}\n"
    )
}

pub async fn print(slots: Option<u32>) -> Result<i32, CliError> {
    let bangerd = client::daemon_binary();
    let doctor = tokio::process::Command::new(&bangerd)
        .args(["doctor", "--json"])
        .output()
        .await
        .map_err(|source| CliError::NoDaemonBinary {
            path: bangerd,
            source,
        })?;
    let report: Report = serde_json::from_slice(&doctor.stdout).map_err(SlurmError::Doctor)?;
    let node = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let slots = slots.unwrap_or(cpus as u32);
    output::raw(&lines(&node, cpus, slots, &features(&report)));
    Ok(0)
}

/// Deletes this node's VMs of `job` (those named `slurm-<job>-<step>`).
pub async fn cleanup(job: &str) -> Result<i32, CliError> {
    if job.is_empty() || !job.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CliError::usage(
            format!("{job:?} is not a Slurm job id"),
            Some("the epilog passes $SLURM_JOB_ID, a number"),
        ));
    }
    let (paths, _) = client::locate(banger_host::config::Paths::from_env()).await?;
    let client = Client::new(&paths.socket);
    let vms = match client.rpc(&Request::VmList).await? {
        Response::Vms(vms) => vms,
        other => return Err(CliError::unexpected(other)),
    };
    let prefix = vm_prefix(job);
    let mut status = 0;
    for vm in vms.iter().filter(|v| v.name.starts_with(&prefix)) {
        match vm::delete(&client, &vm.name).await {
            Ok(()) => output::data(&format!("deleted vm {}", vm.name)),
            Err(e) => {
                output::note(&format!("could not delete vm {}: {e}", vm.name));
                status = 1;
            }
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn features_come_from_passing_checks() {
        let report: Report = serde_json::from_str(
            r#"{"checks":[{"id":"kvm","status":"pass"},{"id":"firecracker","status":"fail"},
                {"id":"qemu","status":"pass"},{"id":"git","status":"pass"}]}"#,
        )
        .unwrap();

        assert_eq!(features(&report), ["kvm", "qemu"]);
    }

    #[test]
    fn firecracker_without_kvm_is_no_feature() {
        let report: Report = serde_json::from_str(
            r#"{"checks":[{"id":"kvm","status":"warn"},{"id":"firecracker","status":"pass"}]}"#,
        )
        .unwrap();

        assert!(features(&report).is_empty());
    }

    #[test]
    fn lines_name_the_slots_and_features() {
        let text = lines("n1", 8, 4, &["kvm", "qemu"]);

        assert_eq!(
            text,
            "# slurm.conf (and GresTypes=banger once)\n\
             NodeName=n1 CPUs=8 Gres=banger:4 Feature=kvm,qemu\n\
             # gres.conf\n\
             NodeName=n1 Name=banger Count=4\n"
        );
    }
}
