#![allow(clippy::unwrap_used)]
//! Runs a whole daemon in-process on a temp socket and drives it with the real CLI
//! binary. Hermetic: no root, no VMM (the backend binary is absent on purpose).

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use banger_host::config::{Config, Paths};
use banger_wire::api::Backend;
use bangerd::store::Store;
use bangerd::vm::{Backends, Manager};
use bangerd::vmm::qemu::Qemu;

struct Daemon {
    _dir: tempfile::TempDir,
    paths: Paths,
    store: Arc<Store>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    rt: tokio::runtime::Runtime,
}

impl Daemon {
    fn start() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let store = Arc::new(bangerd::daemon::open(&paths).unwrap());
        let qemu = Qemu {
            binary: dir.path().join("no-such-qemu"),
            accel: "tcg",
            user: bangerd::vmm::user::VMM_USER.into(),
        };
        let backends = Backends {
            qemu: Some(Arc::new(qemu)),
            firecracker: None,
            default: Backend::Qemu,
        };
        let manager = Arc::new(Manager::new(
            paths.clone(),
            Config::default(),
            store.clone(),
            backends,
            Err("tests run without host networking".into()),
        ));
        let rt = tokio::runtime::Runtime::new().unwrap();
        let listener = rt.block_on(async { bangerd::daemon::bind_socket(&paths.socket, "banger") });
        let listener = listener.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let deps = bangerd::Deps {
            manager,
            socket: paths.socket.clone(),
            agent: None,
        };
        rt.spawn(bangerd::serve(listener, deps, async {
            let _ = stopped.await;
        }));
        Daemon {
            _dir: dir,
            paths,
            store,
            stop: Some(stop),
            rt,
        }
    }

    fn banger(&self, args: &[&str]) -> Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_banger"))
            .args(args)
            .env("BANGER_SOCKET", &self.paths.socket)
            .env("BANGER_STATE_DIR", &self.paths.state_dir)
            .env("BANGER_CONFIG_DIR", &self.paths.config_dir)
            .env("BANGER_DAEMON", Path::new("/nonexistent/bangerd"))
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = &self.rt;
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn vm_list_json_on_an_empty_daemon_is_an_empty_array() {
    let d = Daemon::start();
    let out = d.banger(&["vm", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "[]");
}

#[test]
fn daemon_status_reports_the_socket() {
    let d = Daemon::start();
    let out = d.banger(&["daemon", "status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["socket"], d.paths.socket.display().to_string());
    assert_eq!(info["pid"], std::process::id());
}

#[test]
fn zero_vcpus_is_refused_with_a_hint_and_leaves_no_row() {
    let d = Daemon::start();
    let out = d.banger(&["vm", "create", "bad", "--vcpu", "0"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "error: invalid vcpu count 0\nhint: use --vcpu between 1 and 32\n"
    );
    assert!(d.store.list_vms().unwrap().is_empty());
}

#[test]
fn too_little_memory_is_refused() {
    let d = Daemon::start();
    let out = d.banger(&["vm", "create", "bad", "--memory", "1"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("memory of 1 MiB is too small"),
        "{}",
        stderr(&out)
    );
    assert!(d.store.list_vms().unwrap().is_empty());
}

#[test]
fn unknown_image_is_not_found_and_leaves_nothing() {
    let d = Daemon::start();
    let out = d.banger(&["vm", "create", "web", "--image", "nope"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("image \"nope\""), "{}", stderr(&out));
    assert!(stderr(&out).contains("hint:"), "{}", stderr(&out));
    assert!(d.store.list_vms().unwrap().is_empty());
    let vms = std::fs::read_dir(d.paths.vms_dir()).unwrap().count();
    assert_eq!(vms, 0);
}

#[test]
fn showing_a_missing_vm_exits_not_found() {
    let d = Daemon::start();
    let out = d.banger(&["vm", "show", "ghost"]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(
        stderr(&out),
        "error: vm \"ghost\" not found\nhint: list VMs with `banger vm list`\n"
    );
}

#[test]
fn an_unreachable_daemon_is_a_clear_error() {
    let d = Daemon::start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_banger"))
        .args(["daemon", "status"])
        .env("BANGER_SOCKET", d.paths.runtime_dir.join("nobody.sock"))
        .output()
        .unwrap();
    assert!(
        stdout(&out).starts_with("not running\n"),
        "{}",
        stdout(&out)
    );
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn api_openapi_prints_the_document_the_daemon_serves() {
    let d = Daemon::start();

    let out = d.banger(&["api", "openapi"]);

    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let served: serde_json::Value =
        serde_json::from_str(&bangerd::server::document_json()).unwrap();
    assert_eq!(doc, served);
    assert_eq!(doc["openapi"], "3.1.0");
}
