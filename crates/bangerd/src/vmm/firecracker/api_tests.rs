//! The client against a fake Firecracker API server on a temp Unix socket.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::UnixListener;

use super::*;
use crate::vmm::firecracker::models::{
    CacheType, InstanceState, MemoryBackend, MemoryBackendType, NetworkOverride, SnapshotType,
    VsockOverride,
};

/// What the fake server saw: method, path and JSON body (`Null` when empty).
type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;

/// Serves every connection on a temp socket with one canned answer.
struct FakeFirecracker {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    seen: Seen,
}

impl FakeFirecracker {
    fn start(status: StatusCode, body: &'static str) -> FakeFirecracker {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("fc.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let seen = Seen::default();
        let record = seen.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let record = record.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let record = record.clone();
                    async move {
                        let method = req.method().to_string();
                        let path = req.uri().path().to_string();
                        let bytes = req.into_body().collect().await.unwrap().to_bytes();
                        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                        record.lock().unwrap().push((method, path, value));
                        let response = Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from_static(body.as_bytes())))
                            .unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeFirecracker {
            _dir: dir,
            socket,
            seen,
        }
    }

    fn no_content() -> FakeFirecracker {
        FakeFirecracker::start(StatusCode::NO_CONTENT, "")
    }

    fn client(&self) -> ApiClient {
        ApiClient::new(&self.socket)
    }

    fn only_request(&self) -> (String, String, Value) {
        let seen = self.seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "requests: {seen:?}");
        seen[0].clone()
    }
}

fn put(path: &str, body: Value) -> (String, String, Value) {
    ("PUT".into(), path.into(), body)
}

#[tokio::test]
async fn machine_config_leaves_unset_options_out() {
    let fc = FakeFirecracker::no_content();

    fc.client()
        .put_machine_config(&MachineConfig {
            vcpu_count: 2,
            mem_size_mib: 512,
            smt: None,
            track_dirty_pages: Some(true),
        })
        .await
        .unwrap();

    let body = json!({"vcpu_count": 2, "mem_size_mib": 512, "track_dirty_pages": true});
    assert_eq!(fc.only_request(), put("/machine-config", body));
}

#[tokio::test]
async fn boot_source_body() {
    let fc = FakeFirecracker::no_content();

    fc.client()
        .put_boot_source(&BootSource {
            kernel_image_path: "/img/vmlinux".into(),
            initrd_path: Some("/img/initrd".into()),
            boot_args: Some("console=ttyS0 banger.id=x".into()),
        })
        .await
        .unwrap();

    let body = json!({
        "kernel_image_path": "/img/vmlinux",
        "initrd_path": "/img/initrd",
        "boot_args": "console=ttyS0 banger.id=x",
    });
    assert_eq!(fc.only_request(), put("/boot-source", body));
}

#[tokio::test]
async fn drive_goes_to_its_own_id() {
    let fc = FakeFirecracker::no_content();

    fc.client()
        .put_drive(&Drive {
            drive_id: "upper".into(),
            path_on_host: "/vms/a/upper.ext4".into(),
            is_root_device: false,
            is_read_only: false,
            cache_type: Some(CacheType::Writeback),
        })
        .await
        .unwrap();

    let body = json!({
        "drive_id": "upper",
        "path_on_host": "/vms/a/upper.ext4",
        "is_root_device": false,
        "is_read_only": false,
        "cache_type": "Writeback",
    });
    assert_eq!(fc.only_request(), put("/drives/upper", body));
}

#[tokio::test]
async fn network_interface_goes_to_its_own_id() {
    let fc = FakeFirecracker::no_content();

    fc.client()
        .put_network_interface(&NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: "bgtap0".into(),
            guest_mac: Some("06:00:ac:10:00:02".into()),
        })
        .await
        .unwrap();

    let body =
        json!({"iface_id": "eth0", "host_dev_name": "bgtap0", "guest_mac": "06:00:ac:10:00:02"});
    assert_eq!(fc.only_request(), put("/network-interfaces/eth0", body));
}

#[tokio::test]
async fn vsock_body() {
    let fc = FakeFirecracker::no_content();

    fc.client()
        .put_vsock(&Vsock {
            guest_cid: 3,
            uds_path: "/run/banger/vms/a/vsock.sock".into(),
        })
        .await
        .unwrap();

    let body = json!({"guest_cid": 3, "uds_path": "/run/banger/vms/a/vsock.sock"});
    assert_eq!(fc.only_request(), put("/vsock", body));
}

#[tokio::test]
async fn actions_name_their_type() {
    let fc = FakeFirecracker::no_content();

    fc.client().action(ActionType::InstanceStart).await.unwrap();
    fc.client()
        .action(ActionType::SendCtrlAltDel)
        .await
        .unwrap();

    let seen = fc.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            put("/actions", json!({"action_type": "InstanceStart"})),
            put("/actions", json!({"action_type": "SendCtrlAltDel"})),
        ]
    );
}

#[tokio::test]
async fn pause_is_a_patch_of_vm() {
    let fc = FakeFirecracker::no_content();

    fc.client().set_vm_state(VmState::Paused).await.unwrap();

    let expected = ("PATCH".into(), "/vm".into(), json!({"state": "Paused"}));
    assert_eq!(fc.only_request(), expected);
}

#[tokio::test]
async fn instance_info_parses_state() {
    let fc = FakeFirecracker::start(
        StatusCode::OK,
        r#"{"id":"vm1","state":"Not started","vmm_version":"1.16.1","app_name":"Firecracker"}"#,
    );

    let info = fc.client().instance_info().await.unwrap();

    assert_eq!(info.state, InstanceState::NotStarted);
    assert_eq!(info.vmm_version, "1.16.1");
    assert_eq!(fc.only_request(), ("GET".into(), "/".into(), Value::Null));
}

#[tokio::test]
async fn snapshot_create_body() {
    let fc = FakeFirecracker::no_content();

    fc.client()
        .create_snapshot(&SnapshotCreate {
            snapshot_path: "/s/vm.state".into(),
            mem_file_path: "/s/vm.mem".into(),
            snapshot_type: Some(SnapshotType::Full),
        })
        .await
        .unwrap();

    let body = json!({"snapshot_path": "/s/vm.state", "mem_file_path": "/s/vm.mem", "snapshot_type": "Full"});
    assert_eq!(fc.only_request(), put("/snapshot/create", body));
}

#[tokio::test]
async fn snapshot_load_body() {
    let fc = FakeFirecracker::no_content();

    fc.client()
        .load_snapshot(&SnapshotLoad {
            snapshot_path: "/s/vm.state".into(),
            mem_backend: MemoryBackend {
                backend_type: MemoryBackendType::File,
                backend_path: "/s/vm.mem".into(),
            },
            track_dirty_pages: None,
            resume_vm: true,
            network_overrides: vec![NetworkOverride {
                iface_id: "eth0".into(),
                host_dev_name: "bgtap7".into(),
            }],
            vsock_override: Some(VsockOverride {
                uds_path: "/run/b/vsock.sock".into(),
            }),
        })
        .await
        .unwrap();

    let body = json!({
        "snapshot_path": "/s/vm.state",
        "mem_backend": {"backend_type": "File", "backend_path": "/s/vm.mem"},
        "resume_vm": true,
        "network_overrides": [{"iface_id": "eth0", "host_dev_name": "bgtap7"}],
        "vsock_override": {"uds_path": "/run/b/vsock.sock"},
    });
    assert_eq!(fc.only_request(), put("/snapshot/load", body));
}

#[tokio::test]
async fn a_refusal_carries_the_fault_message_verbatim() {
    let fc = FakeFirecracker::start(
        StatusCode::BAD_REQUEST,
        r#"{"fault_message":"Invalid Memory Configuration: The number of vCPUs must be greater than 0."}"#,
    );

    let err = fc
        .client()
        .action(ActionType::InstanceStart)
        .await
        .unwrap_err();

    let VmmError::Refused { backend, message } = err else {
        panic!("expected Refused, got {err:?}");
    };
    assert_eq!(backend, "firecracker");
    assert_eq!(
        message,
        "Invalid Memory Configuration: The number of vCPUs must be greater than 0."
    );
}

#[tokio::test]
async fn a_refusal_without_a_fault_object_quotes_the_body() {
    let fc = FakeFirecracker::start(StatusCode::INTERNAL_SERVER_ERROR, "oops\n");

    let err = fc
        .client()
        .set_vm_state(VmState::Resumed)
        .await
        .unwrap_err();

    assert_eq!(
        err.to_string(),
        "firecracker refused the request: http status 500 Internal Server Error: oops"
    );
}

#[tokio::test]
async fn a_missing_socket_is_a_control_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("fc.sock");

    let err = ApiClient::new(&socket).instance_info().await.unwrap_err();

    let VmmError::Control { path, source, .. } = &err else {
        panic!("expected Control, got {err:?}");
    };
    assert_eq!(path, &socket);
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("fc.sock");
    // Accepts connections (the kernel backlog does) but never answers.
    let _listener = UnixListener::bind(&socket).unwrap();
    let client = ApiClient::new(&socket).with_timeout(std::time::Duration::from_millis(50));

    let err = client.instance_info().await.unwrap_err();

    let VmmError::Control { source, .. } = &err else {
        panic!("expected Control, got {err:?}");
    };
    assert_eq!(source.kind(), std::io::ErrorKind::TimedOut);
}
