//! `banger vm snapshot NAME [SNAP]`, `vm snapshot list`, `vm snapshot delete SNAP…`.

use banger_wire::api::{Request, Response, SnapshotInfo};

use crate::cli::{SnapshotArgs, SnapshotCommand};
use crate::client::Client;
use crate::error::CliError;
use crate::output;

pub async fn run(client: &Client, args: SnapshotArgs) -> Result<i32, CliError> {
    match (args.command, args.vm) {
        (Some(SnapshotCommand::List { json }), _) => {
            let snaps = expect_snapshots(client.rpc(&Request::SnapshotList).await?)?;
            if json {
                return output::json(&snaps).map(|_| 0);
            }
            output::data(&table(&snaps));
            Ok(0)
        }
        (Some(SnapshotCommand::Delete { names }), _) => {
            for name in names {
                let req = Request::SnapshotDelete { name: name.clone() };
                expect_ok(client.rpc(&req).await?)?;
                output::data(&name);
            }
            Ok(0)
        }
        (None, Some(vm)) => {
            let req = Request::VmSnapshot {
                vm,
                name: args.name,
            };
            let snap = match client.rpc(&req).await? {
                Response::Snapshot(s) => s,
                other => return Err(CliError::unexpected(other)),
            };
            if args.json {
                return output::json(&snap).map(|_| 0);
            }
            output::data(&table(std::slice::from_ref(&snap)));
            Ok(0)
        }
        (None, None) => Err(CliError::usage(
            "name the VM to snapshot",
            Some("banger vm snapshot NAME [SNAP], or `banger vm snapshot list`"),
        )),
    }
}

fn expect_snapshots(resp: Response) -> Result<Vec<SnapshotInfo>, CliError> {
    match resp {
        Response::Snapshots(s) => Ok(s),
        other => Err(CliError::unexpected(other)),
    }
}

fn expect_ok(resp: Response) -> Result<(), CliError> {
    match resp {
        Response::Ok => Ok(()),
        other => Err(CliError::unexpected(other)),
    }
}

fn table(snaps: &[SnapshotInfo]) -> String {
    let rows: Vec<Vec<String>> = snaps
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                if s.warm {
                    format!("{} (warm)", s.vm)
                } else {
                    s.vm.clone()
                },
                s.image.clone(),
                s.backend.as_str().to_string(),
                s.vcpu.to_string(),
                format!("{}M", s.memory_mib),
                format!("{}M", s.disk_bytes.div_ceil(1 << 20)),
                format!("{} ms", s.paused_ms),
                s.created_at.clone(),
            ]
        })
        .collect();
    output::table(
        &[
            "NAME", "VM", "IMAGE", "BACKEND", "VCPU", "MEMORY", "SIZE", "PAUSED", "CREATED",
        ],
        &rows,
    )
}
