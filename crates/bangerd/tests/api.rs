#![allow(clippy::unwrap_used)]
//! The public API (`/api/v1`) of a whole daemon run in-process on a temp socket, driven
//! over HTTP as any client would. Hermetic: no root, no VMM (the backend binary is
//! absent on purpose), so these cover what needs no VM: the error shapes of bad input.

use std::sync::Arc;

use banger_host::config::{Config, Paths};
use banger_wire::api::{Backend, DaemonInfo, VmInfo};
use banger_wire::{ErrorCode, WireError};
use bangerd::vm::{Backends, Manager};
use bangerd::vmm::qemu::Qemu;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;

struct Daemon {
    _dir: tempfile::TempDir,
    paths: Paths,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Daemon {
    async fn start(config: Config) -> Daemon {
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
            config,
            store,
            backends,
            Err("tests run without host networking".into()),
        ));
        let listener = bangerd::daemon::bind_socket(&paths.socket, "banger").unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let deps = bangerd::Deps {
            manager,
            socket: paths.socket.clone(),
            agent: None,
        };
        tokio::spawn(bangerd::serve(listener, deps, async {
            let _ = stopped.await;
        }));
        Daemon {
            _dir: dir,
            paths,
            stop: Some(stop),
        }
    }

    /// Sends one request and reads the whole answer.
    async fn call(&self, method: &str, uri: &str, body: impl Into<Bytes>) -> (StatusCode, Bytes) {
        let stream = tokio::net::UnixStream::connect(&self.paths.socket)
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header(hyper::header::HOST, "bangerd")
            .body(Full::new(body.into()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    }

    /// Sends one request that must fail, and reads its structured error.
    async fn error(
        &self,
        method: &str,
        uri: &str,
        body: impl Into<Bytes>,
    ) -> (StatusCode, WireError) {
        let (status, body) = self.call(method, uri, body).await;
        let err = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{method} {uri}: {status} {body:?} is no error body: {e}"));
        (status, err)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn small_uploads() -> Config {
    Config {
        import_max_mib: 1,
        ..Config::default()
    }
}

#[tokio::test]
async fn status_and_an_empty_vm_list_answer_json() {
    let d = Daemon::start(Config::default()).await;

    let (status, body) = d.call("GET", "/api/v1/status", "").await;
    let (list_status, list) = d.call("GET", "/api/v1/vms", "").await;

    assert_eq!(status, StatusCode::OK);
    let info: DaemonInfo = serde_json::from_slice(&body).unwrap();
    assert_eq!(info.socket, d.paths.socket.display().to_string());
    assert_eq!(list_status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Vec<VmInfo>>(&list).unwrap(),
        vec![]
    );
}

#[tokio::test]
async fn an_unknown_route_is_a_404_error_body() {
    let d = Daemon::start(Config::default()).await;

    let (status, err) = d.error("GET", "/api/v1/volcanoes", "").await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err.code, ErrorCode::NotFound);
    assert_eq!(err.message, "no route for GET /api/v1/volcanoes");
    assert_eq!(
        err.hint.as_deref(),
        Some("the routes are listed in /api/v1/openapi.json")
    );
}

#[tokio::test]
async fn a_wrong_method_is_a_405_error_body() {
    let d = Daemon::start(Config::default()).await;

    let (status, err) = d.error("PATCH", "/api/v1/vms", "").await;

    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(err.code, ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn a_pool_size_too_large_not_a_size_or_for_a_missing_image_is_refused() {
    let d = Daemon::start(Config::default()).await;

    let (status, err) = d
        .error("POST", "/api/v1/images/ghost/warm", r#"{"pool":1}"#)
        .await;
    let (too_many, big) = d
        .error("POST", "/api/v1/images/ghost/warm", r#"{"pool":65}"#)
        .await;
    let (not_a_size, word) = d
        .error("POST", "/api/v1/images/ghost/warm", r#"{"pool":"lots"}"#)
        .await;
    let (back, missing) = d
        .error("POST", "/api/v1/images/ghost/warm", r#"{"pool":"default"}"#)
        .await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(err.message.contains("ghost"), "{}", err.message);
    assert_eq!(too_many, StatusCode::BAD_REQUEST);
    assert!(big.hint.unwrap().contains("at most 64"));
    assert_eq!(not_a_size, StatusCode::BAD_REQUEST);
    assert!(
        word.message.contains(r#"a number of clones or "default""#),
        "{}",
        word.message
    );
    assert_eq!(back, StatusCode::NOT_FOUND);
    assert!(missing.message.contains("ghost"), "{}", missing.message);
    let (_, body) = d.call("GET", "/api/v1/status", "").await;
    let info: DaemonInfo = serde_json::from_slice(&body).unwrap();
    assert!(info.pools.is_empty());
}

#[tokio::test]
async fn unknown_fields_are_refused_and_create_nothing() {
    let d = Daemon::start(Config::default()).await;

    let (status, err) = d
        .error("POST", "/api/v1/vms", r#"{"name":"a","cpus":2}"#)
        .await;
    let (_, list) = d.call("GET", "/api/v1/vms", "").await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert_eq!(err.message, "unknown field in the JSON body: cpus");
    assert_eq!(&list[..], b"[]");
}

#[tokio::test]
async fn wrong_types_are_refused() {
    let d = Daemon::start(Config::default()).await;

    let (status, err) = d
        .error("POST", "/api/v1/vms/a/exec", r#"{"argv":"echo hi"}"#)
        .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err.message.starts_with("invalid JSON body: invalid type"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_huge_json_body_is_a_413_error_body() {
    let d = Daemon::start(Config::default()).await;
    let huge = format!(r#"{{"name":"{}"}}"#, "a".repeat(2 << 20));

    let (status, err) = d.error("POST", "/api/v1/vms", huge).await;

    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert_eq!(err.message, "the JSON body is larger than 1 MiB");
}

#[tokio::test]
async fn an_upload_over_the_import_limit_is_refused_before_anything_runs() {
    let d = Daemon::start(small_uploads()).await;

    let (status, err) = d
        .error(
            "PUT",
            "/api/v1/vms/a/files?path=/x",
            vec![0u8; (1 << 20) + 1],
        )
        .await;

    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(err.message, "the body is larger than 1 MiB");
}

#[tokio::test]
async fn bad_queries_are_refused() {
    let d = Daemon::start(Config::default()).await;

    let (missing, _) = d.error("GET", "/api/v1/vms/a/files", "").await;
    let (relative, err) = d.error("GET", "/api/v1/vms/a/files?path=etc", "").await;
    let (mode, _) = d
        .error("PUT", "/api/v1/vms/a/files?path=/x&mode=rwx", "")
        .await;

    assert_eq!(missing, StatusCode::BAD_REQUEST);
    assert_eq!(relative, StatusCode::BAD_REQUEST);
    assert_eq!(err.message, "path \"etc\" is not absolute");
    assert_eq!(mode, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn verbs_on_a_missing_vm_are_404() {
    let d = Daemon::start(Config::default()).await;

    let (show, err) = d.error("GET", "/api/v1/vms/ghost", "").await;
    let (exec, _) = d
        .error("POST", "/api/v1/vms/ghost/exec", r#"{"argv":["true"]}"#)
        .await;
    let (file, _) = d.error("GET", "/api/v1/vms/ghost/files?path=/x", "").await;
    let (kill, _) = d.error("POST", "/api/v1/execs/0123/kill", "").await;

    assert_eq!(show, StatusCode::NOT_FOUND);
    assert_eq!(err.code, ErrorCode::NotFound);
    assert_eq!(exec, StatusCode::NOT_FOUND);
    assert_eq!(file, StatusCode::NOT_FOUND);
    assert_eq!(kill, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn port_verbs_refuse_bad_input_and_missing_vms() {
    let d = Daemon::start(Config::default()).await;

    let (list, err) = d.error("GET", "/api/v1/vms/ghost/ports", "").await;
    let fwd = r#"{"host":8080,"guest":80,"proto":"tcp"}"#;
    let (add, _) = d.error("POST", "/api/v1/vms/ghost/ports", fwd).await;
    let (bad_proto, _) = d
        .error(
            "POST",
            "/api/v1/vms/ghost/ports",
            r#"{"host":1,"guest":1,"proto":"sctp"}"#,
        )
        .await;
    let (bad_port, _) = d.error("DELETE", "/api/v1/vms/ghost/ports/http", "").await;
    let (rm, _) = d
        .error("DELETE", "/api/v1/vms/ghost/ports/8080?proto=udp", "")
        .await;

    assert_eq!(list, StatusCode::NOT_FOUND);
    assert_eq!(err.code, ErrorCode::NotFound);
    assert_eq!(add, StatusCode::NOT_FOUND);
    assert_eq!(bad_proto, StatusCode::BAD_REQUEST);
    assert_eq!(bad_port, StatusCode::BAD_REQUEST);
    assert_eq!(rm, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_openapi_document_is_served() {
    let d = Daemon::start(Config::default()).await;

    let (status, body) = d.call("GET", "/api/v1/openapi.json", "").await;

    assert_eq!(status, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc.to_string(), {
        let printed: serde_json::Value =
            serde_json::from_str(&bangerd::server::document_json()).unwrap();
        printed.to_string()
    });
}

/// The API as the contract (docs/api.md) lists it.
const ROUTES: [&str; 33] = [
    "GET /api/v1/status",
    "GET /api/v1/openapi.json",
    "GET /api/v1/vms",
    "POST /api/v1/vms",
    "GET /api/v1/vms/{name}",
    "DELETE /api/v1/vms/{name}",
    "POST /api/v1/vms/{name}/start",
    "POST /api/v1/vms/{name}/stop",
    "POST /api/v1/vms/{name}/restart",
    "GET /api/v1/vms/{name}/ports",
    "POST /api/v1/vms/{name}/ports",
    "DELETE /api/v1/vms/{name}/ports/{host}",
    "POST /api/v1/vms/{name}/exec",
    "POST /api/v1/execs/{id}/stdin",
    "POST /api/v1/execs/{id}/resize",
    "POST /api/v1/execs/{id}/kill",
    "POST /api/v1/vms/{name}/detached",
    "GET /api/v1/vms/{name}/detached",
    "GET /api/v1/vms/{name}/detached/{id}/output",
    "POST /api/v1/vms/{name}/detached/{id}/kill",
    "PUT /api/v1/vms/{name}/files",
    "GET /api/v1/vms/{name}/files",
    "PUT /api/v1/vms/{name}/archive",
    "GET /api/v1/vms/{name}/archive",
    "POST /api/v1/vms/{name}/workspace",
    "GET /api/v1/vms/{name}/workspace/patch",
    "POST /api/v1/vms/{name}/snapshots",
    "GET /api/v1/snapshots",
    "DELETE /api/v1/snapshots/{name}",
    "GET /api/v1/images",
    "GET /api/v1/images/{name}",
    "DELETE /api/v1/images/{name}",
    "POST /api/v1/images/{name}/warm",
];

/// The router and the document are built from the same declarations; this checks that
/// they say what the contract says, and that the router serves every documented route
/// (a route answered by the fallback is missing from the router).
#[tokio::test]
async fn every_route_is_documented_and_every_documented_route_is_served() {
    let d = Daemon::start(Config::default()).await;
    let (_, body) = d.call("GET", "/api/v1/openapi.json", "").await;
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    let mut fallback = Vec::new();
    for route in &documented {
        let (method, path) = route.split_once(' ').unwrap();
        let uri = path.replace("{name}", "ghost").replace("{id}", "0");
        let (status, body) = d.call(method, &uri, r#"{"bogus":true}"#).await;
        let unrouted = String::from_utf8_lossy(&body).contains("no route for");
        if status == StatusCode::METHOD_NOT_ALLOWED || unrouted {
            fallback.push(route.clone());
        }
    }

    let mut expected = ROUTES.map(String::from).to_vec();
    expected.sort();
    documented.sort();
    assert_eq!(documented, expected);
    assert_eq!(fallback, Vec::<String>::new());
}
