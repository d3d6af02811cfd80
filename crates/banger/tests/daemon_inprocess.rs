#![allow(clippy::unwrap_used)]
//! Runs a whole daemon in-process on a temp socket and drives it with the real CLI
//! binary. Hermetic: no root, no VMM (the backend binary is absent on purpose).

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use banger_host::config::{Config, Paths};
use banger_wire::api::{Backend, NetPolicy, PruneReport, VmInfo, VmState};
use bangerd::store::{SnapshotRecord, Store, VmRecord};
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
        Daemon::start_with(|_, _| {})
    }

    /// A daemon whose store `seed` filled before it started, as a restarted daemon
    /// finds what the last one left.
    fn start_with(seed: impl FnOnce(&Store, &Paths)) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let store = Arc::new(bangerd::daemon::open(&paths).unwrap());
        seed(&store, &paths);
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
        {
            let _in_runtime = rt.enter();
            manager.spawn_reaper();
        }
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
    let vms = fs_err::read_dir(d.paths.vms_dir()).unwrap().count();
    assert_eq!(vms, 0);
}

#[test]
fn a_pool_size_for_an_unknown_image_is_not_found_and_kept_nowhere() {
    let d = Daemon::start();

    let out = d.banger(&["image", "warm", "nope", "--pool", "1"]);

    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("image \"nope\""), "{}", stderr(&out));
    assert_eq!(d.store.image_pool_size("nope").unwrap(), None);
    assert!(d.store.list_vms().unwrap().is_empty());
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

fn vm(name: &str, state: VmState, expires_at: Option<i64>) -> VmRecord {
    VmRecord {
        id: format!("id-{name}"),
        name: name.into(),
        image: "default".into(),
        backend: Backend::Qemu,
        vcpu: 1,
        memory_mib: 256,
        disk_size_mib: 1024,
        state,
        no_network: true,
        token: "t".into(),
        created_at: "2026-11-24T00:00:00Z".into(),
        pid: None,
        pid_start: None,
        boot: None,
        last_error: None,
        tap: None,
        publish: vec![],
        policy: NetPolicy::default(),
        creating: false,
        ephemeral: false,
        expires_at,
        user: None,
        idle_timeout_secs: None,
    }
}

/// A snapshot row with its (empty) directory.
fn snapshot(store: &Store, paths: &Paths, name: &str, warm: bool) {
    let id = format!("id-{name}");
    fs_err::create_dir_all(paths.state_dir.join("snapshots").join(&id)).unwrap();
    store
        .insert_snapshot(&SnapshotRecord {
            id,
            name: name.into(),
            vm_name: "gone".into(),
            image: "default".into(),
            image_digest: "sha256:00".into(),
            backend: Backend::Qemu,
            vcpu: 1,
            memory_mib: 256,
            disk_size_mib: 1024,
            no_network: true,
            token: "t".into(),
            created_at: "2026-11-24T00:00:00Z".into(),
            paused_ms: 1,
            warm,
        })
        .unwrap();
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn names(d: &Daemon) -> Vec<String> {
    d.store
        .list_vms()
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect()
}

#[test]
fn prune_without_a_terminal_or_force_refuses_and_deletes_nothing() {
    let d = Daemon::start_with(|store, _| {
        store.insert_vm(&vm("old", VmState::Stopped, None)).unwrap();
    });

    let out = d.banger(&["prune"]);

    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("pass --force"), "{}", stderr(&out));
    assert_eq!(names(&d), ["old"]);
}

#[test]
fn prune_dry_run_lists_and_force_deletes_stopped_vms_and_snapshots_but_not_warm_ones() {
    let d = Daemon::start_with(|store, paths| {
        store.insert_vm(&vm("old", VmState::Stopped, None)).unwrap();
        store
            .insert_vm(&vm("broke", VmState::Crashed, None))
            .unwrap();
        store
            .insert_vm(&vm("busy", VmState::Running, None))
            .unwrap();
        snapshot(store, paths, "base", false);
        snapshot(store, paths, "warm-default", true);
    });

    let dry = d.banger(&["prune", "--dry-run"]);
    let listed_after_dry_run = names(&d);
    let forced = d.banger(&["prune", "--force", "--json"]);

    assert!(dry.status.success(), "{}", stderr(&dry));
    assert_eq!(stdout(&dry), "vm broke\nvm old\nsnapshot base\n");
    assert!(
        stderr(&dry).contains("nothing was deleted"),
        "{}",
        stderr(&dry)
    );
    assert_eq!(listed_after_dry_run, ["broke", "busy", "old"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    let report: PruneReport = serde_json::from_slice(&forced.stdout).unwrap();
    assert_eq!(
        (report.dry_run, report.vms, report.snapshots),
        (
            false,
            vec!["broke".into(), "old".into()],
            vec!["base".into()]
        )
    );
    assert_eq!(names(&d), ["busy"]);
    let snaps: Vec<String> = d
        .store
        .list_snapshots()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(snaps, ["warm-default"]);
}

#[test]
fn vms_that_expired_while_the_daemon_was_down_are_deleted_and_the_rest_shown_with_their_expiry() {
    // 2100-01-01T00:00:00Z
    let later = 4_102_444_800;
    let d = Daemon::start_with(|store, _| {
        store
            .insert_vm(&vm("expired", VmState::Stopped, Some(unix_now() - 5)))
            .unwrap();
        store
            .insert_vm(&vm("later", VmState::Stopped, Some(later)))
            .unwrap();
    });

    let t0 = std::time::Instant::now();
    while names(&d).contains(&"expired".to_string()) && t0.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = d.banger(&["vm", "show", "later", "--json"]);

    assert_eq!(names(&d), ["later"]);
    let info: VmInfo = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info.expires_at.as_deref(), Some("2100-01-01T00:00:00Z"));
}
