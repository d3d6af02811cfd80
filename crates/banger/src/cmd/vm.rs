//! `banger vm …` lifecycle verbs.

use banger_wire::api::{
    NetPolicy, NetPolicyChange, Request, Response, StreamEvent, VmCreateSpec, VmInfo, VmSetSpec,
};

use super::parse_backend;
use crate::cli::VmCommand;
use crate::client::Client;
use crate::error::CliError;
use crate::output;
use crate::progress::Waits;
use crate::vm::{self, expect_vm};

pub async fn run(client: &Client, cmd: VmCommand) -> Result<i32, CliError> {
    match cmd {
        VmCommand::Create {
            name,
            image,
            res,
            net,
            backend,
            no_start,
            from_snapshot,
            ttl,
            json,
            user,
            idle_timeout,
        } => {
            let image = super::image::ensure(client, image).await?;
            let spec = VmCreateSpec {
                name,
                image,
                vcpu: res.vcpu,
                memory_mib: res.memory,
                disk_size_mib: res.disk_size,
                backend: parse_backend(backend)?,
                no_start,
                no_network: net.no_network,
                publish: net.publish,
                policy: super::policy(&net.policy),
                from_snapshot,
                warm: false,
                exec_only: false,
                ephemeral: false,
                ttl_secs: ttl.map(|d| d.as_secs()),
                user,
                idle_timeout_secs: idle_timeout.map(|d| d.as_secs()),
                ..Default::default()
            };
            let waiting = Waits::stderr(json).phase(if spec.no_start {
                "creating VM"
            } else {
                "starting VM, waiting for its agent and sshd"
            });
            let vm = vm::create(client, spec).await?;
            drop(waiting);
            show(&vm, json)
        }
        VmCommand::Start { name } => one(client.rpc(&Request::VmStart { name }).await?),
        VmCommand::Stop { name, force } => {
            one(client.rpc(&Request::VmStop { name, force }).await?)
        }
        VmCommand::Restart { name } => one(client.rpc(&Request::VmRestart { name }).await?),
        VmCommand::Delete { names } => {
            for name in names {
                vm::delete(client, &name).await?;
                output::data(&name);
            }
            Ok(0)
        }
        VmCommand::List { json } => match client.rpc(&Request::VmList).await? {
            Response::Vms(vms) if json => output::json(&vms).map(|_| 0),
            Response::Vms(vms) => {
                output::data(&list_table(&vms));
                Ok(0)
            }
            other => Err(CliError::unexpected(other)),
        },
        VmCommand::Show { name, json } => show(&vm::show(client, &name).await?, json),
        VmCommand::Set { name, res, policy } => {
            let spec = VmSetSpec {
                vcpu: res.vcpu,
                memory_mib: res.memory,
                disk_size_mib: res.disk_size,
                policy: policy_change(policy),
            };
            one(client.rpc(&Request::VmSet { name, spec }).await?)
        }
        VmCommand::Logs {
            name,
            follow,
            exec: Some(id),
        } => super::detached::logs(client, &name, &id, follow).await,
        VmCommand::Logs {
            name,
            follow,
            exec: None,
        } => {
            client
                .stream(&Request::VmLogs { name, follow }, |ev| {
                    if let StreamEvent::Log { text } = ev {
                        output::raw(&text);
                    }
                })
                .await?;
            Ok(0)
        }
        VmCommand::Exec(args) => super::exec::run(client, args).await,
        VmCommand::Ps { name, json } => super::detached::ps(client, &name, json).await,
        VmCommand::Kill { name, id, signal } => {
            super::detached::kill(client, &name, &id, signal).await
        }
        VmCommand::Cp { paths, user } => super::cp::run(client, &paths, user).await,
        VmCommand::Ssh {
            name,
            user,
            command,
        } => super::ssh::run(client, &name, user, command).await,
        VmCommand::SshConfig { name, user } => super::ssh::config(client, &name, user).await,
        VmCommand::Run(args) => super::run::run(client, args).await,
        VmCommand::Snapshot(args) => super::snapshot::run(client, args).await,
        VmCommand::Port(cmd) => super::port::run(client, cmd).await,
    }
}

fn policy_change(args: crate::cli::PolicyArgs) -> NetPolicyChange {
    let list = |v: Vec<String>| match v.as_slice() {
        [] => None,
        [none] if none == "none" => Some(Vec::new()),
        _ => Some(v),
    };
    NetPolicyChange {
        mode: args.mode.and_then(|m| m.parse().ok()),
        group: args.group,
        allow_host: list(args.allow_host),
        allow: list(args.allow),
        egress_allow: list(args.egress_allow),
    }
}

fn one(resp: Response) -> Result<i32, CliError> {
    let vm = expect_vm(resp)?;
    output::data(&list_table(std::slice::from_ref(&vm)));
    Ok(0)
}

fn list_table(vms: &[VmInfo]) -> String {
    let rows: Vec<Vec<String>> = vms
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.state.as_str().to_string(),
                v.backend.as_str().to_string(),
                v.image.clone(),
                v.vcpu.to_string(),
                format!("{}M", v.memory_mib),
                v.ip.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    output::table(
        &["NAME", "STATE", "BACKEND", "IMAGE", "VCPU", "MEMORY", "IP"],
        &rows,
    )
}

/// `isolated, group ci, host ports 8000, allow 10.0.0.0/8, egress pypi.org`.
fn policy_line(p: &NetPolicy) -> String {
    let mut parts = vec![p.mode.unwrap_or_default().as_str().to_string()];
    if let Some(g) = &p.group {
        parts.push(format!("group {g}"));
    }
    for (what, list) in [
        ("host ports", &p.allow_host),
        ("allow", &p.allow),
        ("egress only", &p.egress_allow),
    ] {
        if !list.is_empty() {
            parts.push(format!("{what} {}", list.join(" ")));
        }
    }
    parts.join(", ")
}

fn show(vm: &VmInfo, json: bool) -> Result<i32, CliError> {
    if json {
        output::json(vm)?;
        return Ok(0);
    }
    let mut s = format!(
        "name      {}\nid        {}\nstate     {}\nbackend   {}\nimage     {}\nvcpu      {}\nmemory    {} MiB\ndisk      {} MiB\nip        {}\npid       {}\ncreated   {}\n",
        vm.name,
        vm.id,
        vm.state.as_str(),
        vm.backend.as_str(),
        vm.image,
        vm.vcpu,
        vm.memory_mib,
        vm.disk_size_mib,
        vm.ip.as_deref().unwrap_or("-"),
        vm.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        vm.created_at,
    );
    if let Some(b) = &vm.boot {
        s.push_str(&format!(
            "boot      {} ms prepare, {} ms VMM start to agent ready\n",
            b.prepare_ms, b.agent_ready_ms
        ));
    }
    if let Some(p) = &vm.policy {
        s.push_str(&format!("network   {}\n", policy_line(p)));
    }
    if let Some(at) = &vm.expires_at {
        s.push_str(&format!("expires   {at} (then deleted)\n"));
    }
    if let Some(secs) = vm.idle_timeout_secs {
        s.push_str(&format!("idle      deleted after {secs}s unused\n"));
    }
    if let Some(e) = &vm.last_error {
        s.push_str(&format!("last error:\n{e}\n"));
    }
    output::data(&s);
    Ok(0)
}
