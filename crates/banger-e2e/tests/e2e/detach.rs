//! Detached commands: `vm exec -d` returns at once and the command runs on after the
//! CLI exits; `vm ps` shows it running, then exited with its code; `vm logs --exec`
//! prints its output once; `--timeout` and `vm kill` reach its whole process group; the
//! same through `/api/v1/vms/{name}/detached`.

use std::time::{Duration, Instant};

use banger_e2e::{Harness, TestVm};
use banger_wire::agent::{DetachedInfo, DetachedState};
use banger_wire::public::ExecEvent;
use banger_wire::{ErrorCode, WireError};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

/// `vm exec -d --json ARGS…`: the started command.
fn detach(h: &Harness, args: &[&str]) -> DetachedInfo {
    let mut argv = vec!["vm", "exec", "-d", "--json"];
    argv.extend_from_slice(args);
    let out = h.banger(&argv).success();
    serde_json::from_slice(&out.stdout).expect("vm exec -d --json is a DetachedInfo")
}

/// `vm ps NAME --json`.
fn ps(h: &Harness, vm: &TestVm<'_>) -> Vec<DetachedInfo> {
    let out = h.banger(&["vm", "ps", vm.name(), "--json"]).success();
    serde_json::from_slice(&out.stdout).expect("vm ps --json is a list of DetachedInfo")
}

/// Waits up to `limit` until `vm ps` shows command `id` exited; its last entry.
fn exited_within(h: &Harness, vm: &TestVm<'_>, id: &str, limit: Duration) -> DetachedInfo {
    let t0 = Instant::now();
    loop {
        let info = ps(h, vm).into_iter().find(|d| d.id == id).expect("listed");
        if info.state == DetachedState::Exited || t0.elapsed() > limit {
            return info;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// How many processes in the guest have exactly this command line.
fn processes(vm: &TestVm<'_>, cmdline: &str) -> String {
    let script = format!(
        "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' <\"$f\"; echo; done | grep -c '^{cmdline} $' || true"
    );
    vm.sh(&script)
}

#[test]
fn detached_command_outlives_the_cli_and_its_output_is_fetched_once() {
    let Some(h) = banger_e2e::turn("detached_command_outlives_the_cli") else {
        return;
    };
    let vm = h.create("detach", &[]);
    let script = "echo $GREETING from $(pwd); echo warn >&2; sleep 5; echo done; exit 7";

    let t0 = Instant::now();
    let started = detach(
        &h,
        &[
            "-e",
            "GREETING=hi",
            "-w",
            "/tmp",
            vm.name(),
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    let returned_after = t0.elapsed();
    let running = ps(&h, &vm);
    let ended = exited_within(&h, &vm, &started.id, Duration::from_secs(60));
    let logs = h
        .banger(&["vm", "logs", vm.name(), "--exec", &started.id])
        .success();
    let after_fetch = ps(&h, &vm);
    let again = h.banger(&["vm", "logs", vm.name(), "--exec", &started.id]);

    assert!(
        returned_after < Duration::from_secs(4),
        "vm exec -d took {returned_after:?}"
    );
    assert_eq!(started.state, DetachedState::Running);
    assert_eq!(running.len(), 1);
    assert_eq!(
        (running[0].id.as_str(), running[0].state),
        (started.id.as_str(), DetachedState::Running)
    );
    assert_eq!(running[0].argv, ["sh", "-c", script]);
    assert_eq!(
        (ended.state, ended.exit_code, ended.timed_out),
        (DetachedState::Exited, Some(7), false)
    );
    assert_eq!(logs.text(), "hi from /tmp\ndone");
    assert_eq!(logs.stderr, "warn\n");
    assert!(after_fetch.is_empty(), "{after_fetch:?}");
    again.failure(Some(4), "no detached command");
}

#[test]
fn detached_timeout_and_kill_end_the_whole_group() {
    let Some(h) = banger_e2e::turn("detached_timeout_and_kill") else {
        return;
    };
    let vm = h.create("detach-kill", &[]);

    let timed = detach(
        &h,
        &[
            "--timeout",
            "2",
            vm.name(),
            "--",
            "sh",
            "-c",
            "sleep 61 & sleep 61",
        ],
    );
    let victim = detach(&h, &[vm.name(), "--", "sh", "-c", "sleep 62 & sleep 62"]);
    h.banger(&["vm", "kill", vm.name(), &victim.id, "--signal", "TERM"])
        .success();
    let timed = exited_within(&h, &vm, &timed.id, Duration::from_secs(30));
    let killed = exited_within(&h, &vm, &victim.id, Duration::from_secs(30));
    let followed = h
        .banger(&["vm", "logs", vm.name(), "--exec", &timed.id, "--follow"])
        .success();

    assert_eq!((timed.exit_code, timed.timed_out), (Some(124), true));
    assert_eq!(
        processes(&vm, "sleep 61"),
        "0",
        "a sleep outlived the timeout"
    );
    assert_eq!((killed.exit_code, killed.timed_out), (Some(143), false));
    assert_eq!(processes(&vm, "sleep 62"), "0", "a sleep outlived the kill");
    assert_eq!(followed.text(), "");
}

#[test]
fn api_detached() {
    let Some(h) = banger_e2e::turn("api_detached") else {
        return;
    };
    let api = h.api();
    let vm = h.create("api-detach", &[]);
    let base = format!("/api/v1/vms/{}/detached", vm.name());
    let body = r#"{"argv": ["sh", "-c", "echo out; sleep 0.5; echo err >&2; sleep 2; exit 5"]}"#;

    let started: DetachedInfo = api.json(201, "POST", &base, body);
    let listed: Vec<DetachedInfo> = api.json(200, "GET", &base, "");
    let events = api
        .send(
            "GET",
            &format!("{base}/{}/output?follow=true", started.id),
            b"",
        )
        .events();
    let gone: WireError = api.json(404, "GET", &format!("{base}/{}/output", started.id), "");
    let tty: WireError = api.json(
        400,
        "POST",
        &base,
        r#"{"argv": ["true"], "tty": {"rows": 2, "cols": 2}}"#,
    );

    assert_eq!(
        listed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        [started.id.as_str()]
    );
    assert_eq!(
        events,
        [
            ExecEvent::Stdout {
                data: BASE64.encode("out\n")
            },
            ExecEvent::Stderr {
                data: BASE64.encode("err\n")
            },
            ExecEvent::Exit {
                code: 5,
                timed_out: false
            },
        ]
    );
    assert_eq!(gone.code, ErrorCode::NotFound);
    assert_eq!(tty.code, ErrorCode::InvalidArgument);
}
