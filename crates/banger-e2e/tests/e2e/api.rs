//! The public HTTP API (`/api/v1`) driven over the daemon's socket by a plain HTTP
//! client: VM lifecycle, exec events, stdin, timeouts, files, archives, workspaces, and a
//! client that leaves mid-exec.

use banger_e2e::http::Api;
use banger_e2e::repo::sh_in;
use banger_e2e::{Harness, TestVm};
use banger_wire::api::{VmInfo, VmState};
use banger_wire::public::{ExecEvent, WorkspaceInfo};
use banger_wire::{ErrorCode, WireError};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::json;

/// A VM made through the API (`exec_only`: the answer comes once the agent is up),
/// deleted when the returned [`TestVm`] drops.
fn create<'h>(h: &'h Harness, base: &str) -> (TestVm<'h>, VmInfo) {
    let name = h.name(base);
    let vm = TestVm::new(h, name.clone());
    let body = json!({"name": name, "exec_only": true}).to_string();
    let info = h.api().json(201, "POST", "/api/v1/vms", &body);
    (vm, info)
}

fn exec(api: &Api, vm: &str, body: serde_json::Value) -> Vec<ExecEvent> {
    api.send(
        "POST",
        &format!("/api/v1/vms/{vm}/exec"),
        body.to_string().as_bytes(),
    )
    .events()
}

/// The stdout and stderr of `events`, decoded.
fn output(events: &[ExecEvent]) -> (String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    for ev in events {
        match ev {
            ExecEvent::Stdout { data } => out.extend(BASE64.decode(data).unwrap()),
            ExecEvent::Stderr { data } => err.extend(BASE64.decode(data).unwrap()),
            _ => {}
        }
    }
    (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn api_exec() {
    let Some(h) = banger_e2e::turn("api_exec") else {
        return;
    };
    let api = h.api();
    let (_vm, info) = create(&h, "api-exec");
    let name = info.name.clone();

    let ran = exec(
        &api,
        &name,
        json!({"argv": ["sh", "-c", "echo out; echo err >&2; exit 3"]}),
    );
    let piped = exec(
        &api,
        &name,
        json!({"argv": ["cat"], "stdin": BASE64.encode("piped")}),
    );
    let timed = exec(
        &api,
        &name,
        json!({"argv": ["sleep", "30"], "timeout_secs": 1}),
    );
    let missing = api.json::<WireError>(
        404,
        "POST",
        &format!("/api/v1/vms/{name}/exec"),
        r#"{"argv": ["no-such-command"]}"#,
    );
    api.expect(204, "DELETE", &format!("/api/v1/vms/{name}"), b"");
    let gone = api.json::<WireError>(404, "GET", &format!("/api/v1/vms/{name}"), "");

    assert_eq!(info.state, VmState::Running);
    assert!(matches!(ran[0], ExecEvent::Started { .. }), "{ran:?}");
    assert_eq!(output(&ran), ("out\n".into(), "err\n".into()));
    assert_eq!(
        ran.last(),
        Some(&ExecEvent::Exit {
            code: 3,
            timed_out: false
        })
    );
    assert_eq!(output(&piped).0, "piped");
    assert_eq!(
        timed.last(),
        Some(&ExecEvent::Exit {
            code: 137,
            timed_out: true
        })
    );
    assert_eq!(missing.code, ErrorCode::NotFound);
    assert_eq!(gone.code, ErrorCode::NotFound);
    assert!(h.vms().iter().all(|v| v.name != name));
}

#[test]
fn api_interactive_stdin() {
    let Some(h) = banger_e2e::turn("api_interactive_stdin") else {
        return;
    };
    let api = h.api();
    let (_vm, info) = create(&h, "api-stdin");
    let body = json!({"argv": ["cat"], "interactive": true}).to_string();

    let mut reply = api.send(
        "POST",
        &format!("/api/v1/vms/{}/exec", info.name),
        body.as_bytes(),
    );
    let Some(ExecEvent::Started { id }) = reply.event() else {
        panic!("no started event")
    };
    api.expect(204, "POST", &format!("/api/v1/execs/{id}/stdin"), b"typed ");
    api.expect(
        204,
        "POST",
        &format!("/api/v1/execs/{id}/stdin?eof=true"),
        b"line\n",
    );
    let rest = reply.events();
    let ended = api.json::<WireError>(404, "POST", &format!("/api/v1/execs/{id}/kill"), "");

    assert_eq!(output(&rest).0, "typed line\n");
    assert_eq!(
        rest.last(),
        Some(&ExecEvent::Exit {
            code: 0,
            timed_out: false
        })
    );
    assert_eq!(ended.code, ErrorCode::NotFound);
}

#[test]
fn api_closed_stream_kills_the_command() {
    let Some(h) = banger_e2e::turn("api_closed_stream_kills_the_command") else {
        return;
    };
    let api = h.api();
    let (vm, info) = create(&h, "api-close");
    let body = json!({"argv": ["sh", "-c", "echo ready; exec sleep 1001"]}).to_string();
    // `slee[p]` matches the command's argv, never this script's own.
    let gone = "i=0
        while cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -q 'slee[p] 1001'; do
          i=$((i+1)); [ $i -lt 100 ] || { echo left; exit 0; }; sleep 0.1
        done
        echo gone";

    let mut reply = api.send(
        "POST",
        &format!("/api/v1/vms/{}/exec", info.name),
        body.as_bytes(),
    );
    let Some(ExecEvent::Started { id }) = reply.event() else {
        panic!("no started event")
    };
    let ready = reply.event();
    drop(reply);
    let after = vm.sh(gone);
    let forgotten = api.json::<WireError>(404, "POST", &format!("/api/v1/execs/{id}/kill"), "");

    assert_eq!(
        ready,
        Some(ExecEvent::Stdout {
            data: BASE64.encode("ready\n")
        })
    );
    assert_eq!(after, "gone");
    assert_eq!(forgotten.code, ErrorCode::NotFound);
}

#[test]
fn api_files_and_archives() {
    let Some(h) = banger_e2e::turn("api_files_and_archives") else {
        return;
    };
    let api = h.api();
    let (vm, info) = create(&h, "api-files");
    let base = format!("/api/v1/vms/{}", info.name);
    let tree = h.run_dir.join("api-tree");
    fs_err::create_dir_all(tree.join("a")).unwrap();
    fs_err::write(tree.join("a/b.txt"), "bee\n").unwrap();
    fs_err::write(tree.join("c.txt"), "sea\n").unwrap();
    let tar = std::process::Command::new("tar")
        .args(["-c", "-C"])
        .arg(&tree)
        .arg(".")
        .output()
        .unwrap()
        .stdout;
    let evil = std::process::Command::new("python3")
        .args([
            "-c",
            "import io, sys, tarfile\n\
             t = tarfile.open(fileobj=sys.stdout.buffer, mode='w|')\n\
             i = tarfile.TarInfo('../escape.txt'); i.size = 3\n\
             t.addfile(i, io.BytesIO(b'bad')); t.close()",
        ])
        .output()
        .unwrap()
        .stdout;
    let script = b"#!/bin/sh\necho hi\n";

    api.expect(
        204,
        "PUT",
        &format!("{base}/files?path=/root/d/hello.sh&mode=0755"),
        script,
    );
    let read = api.expect(
        200,
        "GET",
        &format!("{base}/files?path=/root/d/hello.sh"),
        b"",
    );
    let ran = vm.sh("/root/d/hello.sh; stat -c %a /root/d/hello.sh");
    let absent = api.json::<WireError>(404, "GET", &format!("{base}/files?path=/root/nope"), "");
    api.expect(204, "PUT", &format!("{base}/archive?path=/root/t"), &tar);
    let packed = api.expect(200, "GET", &format!("{base}/archive?path=/root/t"), b"");
    let refused: WireError = serde_json::from_slice(&api.expect(
        409,
        "PUT",
        &format!("{base}/archive?path=/root/t2"),
        &evil,
    ))
    .unwrap();
    let escaped = vm.sh("test -e /root/escape.txt && echo escaped || echo kept-in");
    let unpacked = tempfile::tempdir().unwrap();
    let listed = {
        fs_err::write(unpacked.path().join("back.tar"), &packed).unwrap();
        sh_in(
            unpacked.path(),
            "tar -xf back.tar && rm back.tar && cat a/b.txt c.txt",
        )
    };

    assert_eq!(read, script);
    assert_eq!(ran, "hi\n755");
    assert_eq!(absent.code, ErrorCode::NotFound);
    assert_eq!(listed, "bee\nsea");
    assert_eq!(refused.code, ErrorCode::FailedPrecondition);
    assert!(refused.chain.concat().contains(".."), "{refused:?}");
    assert_eq!(escaped, "kept-in");
}

#[test]
fn api_workspace() {
    let Some(h) = banger_e2e::turn("api_workspace") else {
        return;
    };
    let api = h.api();
    let (vm, info) = create(&h, "api-ws");
    let base = format!("/api/v1/vms/{}", info.name);
    let repo = h.run_dir.join("api-repo");
    fs_err::create_dir_all(repo.join("src")).unwrap();
    fs_err::write(repo.join("README.md"), "hello\n").unwrap();
    fs_err::write(repo.join("src/main.txt"), "one\n").unwrap();
    let tar = std::process::Command::new("tar")
        .args(["-c", "-C"])
        .arg(&repo)
        .args(["README.md", "src/main.txt"])
        .output()
        .unwrap()
        .stdout;

    let prepared: WorkspaceInfo = {
        let body = api.expect(
            200,
            "POST",
            &format!("{base}/workspace?path=/root/repo"),
            &tar,
        );
        serde_json::from_slice(&body).unwrap()
    };
    let again = api.expect(
        409,
        "POST",
        &format!("{base}/workspace?path=/root/repo"),
        &tar,
    );
    let unchanged = api.expect(
        200,
        "GET",
        &format!("{base}/workspace/patch?path=/root/repo"),
        b"",
    );
    vm.sh("cd /root/repo && echo two >>src/main.txt && echo new >added.txt && rm README.md");
    let patch = api.expect(
        200,
        "GET",
        &format!("{base}/workspace/patch?path=/root/repo"),
        b"",
    );
    let none = api.json::<WireError>(
        404,
        "GET",
        &format!("{base}/workspace/patch?path=/root/x"),
        "",
    );
    fs_err::write(repo.join("guest.patch"), &patch).unwrap();
    let applied = sh_in(
        &repo,
        "git apply guest.patch && rm guest.patch && cat src/main.txt added.txt && ls",
    );

    assert_eq!(
        prepared,
        WorkspaceInfo {
            path: "/root/repo".into(),
            files: 2
        }
    );
    assert!(String::from_utf8_lossy(&again).contains("not empty"));
    assert_eq!(unchanged, b"");
    assert_eq!(applied, "one\ntwo\nnew\nadded.txt\nsrc");
    assert_eq!(none.code, ErrorCode::NotFound);
}
