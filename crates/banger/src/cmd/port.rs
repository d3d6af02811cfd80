//! `banger vm port add NAME HOST:GUEST`, `vm port rm NAME HOST[:GUEST]`,
//! `vm port ls NAME [--json]`: a VM's port forwards, changed by the daemon.

use banger_wire::api::{PortInfo, Request};

use crate::cli::PortCommand;
use crate::client::Client;
use crate::error::CliError;
use crate::{output, vm};

pub async fn run(client: &Client, cmd: PortCommand) -> Result<i32, CliError> {
    match cmd {
        PortCommand::Add { name, port } => {
            vm::ports(client, Request::VmPortAdd { name, port }).await?;
        }
        PortCommand::Rm { name, port } => {
            vm::ports(client, Request::VmPortRemove { name, port }).await?;
        }
        PortCommand::Ls { name, json } => {
            let ports = vm::ports(client, Request::VmPortList { name }).await?;
            if json {
                return output::json(&ports).map(|_| 0);
            }
            output::data(&table(&ports));
        }
    }
    Ok(0)
}

fn table(ports: &[PortInfo]) -> String {
    let rows: Vec<Vec<String>> = ports
        .iter()
        .map(|p| {
            vec![
                p.host.to_string(),
                p.guest.to_string(),
                p.proto.as_str().to_string(),
            ]
        })
        .collect();
    output::table(&["HOST", "GUEST", "PROTO"], &rows)
}

#[cfg(test)]
mod tests {
    use banger_wire::api::PortProto;

    use super::*;

    #[test]
    fn forwards_print_as_a_table() {
        let ports = [PortInfo {
            host: 8080,
            guest: 80,
            proto: PortProto::Tcp,
        }];

        let t = table(&ports);

        let lines: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(lines, [["HOST", "GUEST", "PROTO"], ["8080", "80", "tcp"]]);
    }
}
