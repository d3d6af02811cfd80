//! Pulls from a fake registry on a loopback port: the real `oci-client` code, the layer
//! cache and the layer code of `image import`, fed hostile and broken layers.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use banger_wire::api::RegistryPullSpec;
use banger_wire::{Diagnostic, ErrorCode};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use tar::EntryType;

use super::*;
use crate::image::import::tests::{ls, ready, rootfs_layer, setup, store_entries};
use crate::image::layers::tests::layer;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Repository `x`: manifests by tag, blobs by digest; `served` replaces a blob's bytes
/// on the wire (a registry that sends something else than it lists).
#[derive(Default)]
struct Registry {
    manifests: HashMap<String, Vec<u8>>,
    blobs: HashMap<String, Vec<u8>>,
    served: HashMap<String, Vec<u8>>,
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Registry {
    fn blob(&mut self, bytes: Vec<u8>) -> (String, usize) {
        let digest = sha(&bytes);
        let len = bytes.len();
        self.blobs.insert(digest.clone(), bytes);
        (digest, len)
    }

    /// Tags `tag` as an image of `layers` (bytes, media type), bottom first.
    fn image(&mut self, tag: &str, layers: &[(Vec<u8>, &str)]) -> Vec<String> {
        let config = br#"{"os":"linux","architecture":"amd64","config":{"Env":["PATH=/usr/bin:/bin"],"Cmd":["/bin/sh"],"WorkingDir":"/srv"},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let (config_digest, config_len) = self.blob(config.to_vec());
        let mut digests = Vec::new();
        let descriptors: Vec<String> = layers
            .iter()
            .map(|(bytes, media_type)| {
                let (digest, len) = self.blob(bytes.clone());
                digests.push(digest.clone());
                format!(r#"{{"mediaType":"{media_type}","digest":"{digest}","size":{len}}}"#)
            })
            .collect();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{config_len}}},"layers":[{}]}}"#,
            descriptors.join(",")
        );
        self.manifests
            .insert(tag.to_string(), manifest.into_bytes());
        digests
    }
}

type Shared = Arc<Mutex<Registry>>;

async fn serve(State(reg): State<Shared>, UrlPath(rest): UrlPath<String>) -> Response {
    let reg = reg.lock().unwrap();
    let unknown = |code: &str| {
        let body = format!(r#"{{"errors":[{{"code":"{code}","message":"{code} here"}}]}}"#);
        (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    };
    if let Some(tag) = rest.strip_prefix("x/manifests/") {
        return match reg.manifests.get(tag) {
            Some(m) => (
                [
                    (header::CONTENT_TYPE, MANIFEST.to_string()),
                    (
                        header::HeaderName::from_static("docker-content-digest"),
                        sha(m),
                    ),
                ],
                m.clone(),
            )
                .into_response(),
            None => unknown("MANIFEST_UNKNOWN"),
        };
    }
    if let Some(digest) = rest.strip_prefix("x/blobs/") {
        let bytes = reg.served.get(digest).or_else(|| reg.blobs.get(digest));
        return match bytes {
            Some(b) => Body::from(b.clone()).into_response(),
            None => unknown("BLOB_UNKNOWN"),
        };
    }
    StatusCode::OK.into_response()
}

/// Serves `reg` over plain HTTP on a loopback port; answers `127.0.0.1:PORT`.
async fn start(reg: Shared) -> String {
    let app = axum::Router::new()
        .route("/v2/", axum::routing::get(|| async { "{}" }))
        .route("/v2/{*rest}", axum::routing::get(serve))
        .with_state(reg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr.to_string()
}

/// The pull tokens of [`start_with_tokens`]'s registry.
#[derive(Default)]
struct Tokens {
    /// How many it gave out.
    issued: u32,
    /// The one it takes, and for how many more requests.
    valid: Option<(String, u32)>,
    /// The token requests' queries.
    asked: Vec<String>,
}

/// The login `start_with_tokens`'s token service wants.
const LOGIN: (&str, &str) = ("dev", "s3cret");

/// Serves `reg` as [`start`] does, but behind the distribution spec's token flow: `/v2/`
/// challenges with `Bearer realm=".../token"`, whose tokens (for [`LOGIN`] only) are
/// each good for two requests, so a pull's token runs out before its layers.
async fn start_with_tokens(reg: Shared) -> (String, Arc<Mutex<Tokens>>) {
    use axum::extract::RawQuery;
    use axum::http::HeaderMap;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tokens: Arc<Mutex<Tokens>> = Arc::default();
    let challenge = format!(r#"Bearer realm="http://{addr}/token",service="fake""#);
    let refused = move || {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, challenge.clone())],
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"log in"}]}"#,
        )
            .into_response()
    };
    let login = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", LOGIN.0, LOGIN.1))
    );
    let app = axum::Router::new()
        .route("/v2/", axum::routing::get({
            let refused = refused.clone();
            move || async move { refused() }
        }))
        .route("/token", axum::routing::get({
            let tokens = tokens.clone();
            move |headers: HeaderMap, RawQuery(query): RawQuery| async move {
                if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(&login) {
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                let mut t = tokens.lock().unwrap();
                t.issued += 1;
                let token = format!("token-{}", t.issued);
                t.valid = Some((token.clone(), 2));
                t.asked.push(query.unwrap_or_default());
                format!(r#"{{"token":"{token}","expires_in":60}}"#).into_response()
            }
        }))
        .route("/v2/{*rest}", axum::routing::get({
            let tokens = tokens.clone();
            move |headers: HeaderMap, State(reg): State<Shared>, rest: UrlPath<String>| async move {
                let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
                {
                    let mut t = tokens.lock().unwrap();
                    match &mut t.valid {
                        Some((token, left)) if *left > 0 && given == Some(format!("Bearer {token}")) => *left -= 1,
                        _ => return refused(),
                    }
                }
                serve(State(reg), rest).await
            }
        }))
        .with_state(reg);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr.to_string(), tokens)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 3).unwrap()
}

const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZST: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

async fn pull_as(
    paths: &Paths,
    agent: &Path,
    reference: String,
    name: &str,
) -> Result<RegistryPullReport, ImageError> {
    pull_with(paths, agent, reference, name, None).await
}

async fn pull_with(
    paths: &Paths,
    agent: &Path,
    reference: String,
    name: &str,
    credentials: Option<(&str, &str)>,
) -> Result<RegistryPullReport, ImageError> {
    let spec = RegistryPullSpec {
        reference,
        name: Some(name.into()),
        insecure: true,
        credentials: credentials.map(|(username, password)| {
            banger_wire::api::RegistryCredentials {
                username: username.into(),
                password: password.into(),
            }
        }),
    };
    pull(
        paths,
        spec,
        agent.to_path_buf(),
        Limits::default(),
        Arc::new(|_| {}),
    )
    .await
}

/// Nothing half-made: no image, no work directory, no partial download.
fn assert_nothing_left(paths: &Paths) {
    if paths.images_dir().exists() {
        assert!(
            store_entries(paths).is_empty(),
            "{:?}",
            store_entries(paths)
        );
    }
    let tmp = Cache::new(&paths.cache_dir).dir().join("tmp");
    let partial: Vec<_> = fs_err::read_dir(&tmp).unwrap().collect();
    assert!(partial.is_empty(), "{partial:?}");
}

#[tokio::test]
async fn layers_apply_with_whiteouts_zstd_and_a_shared_cached_base() {
    if !ready() {
        return;
    }
    let (_root, paths, agent) = setup();
    let mut reg = Registry::default();
    let base = gzip(&rootfs_layer());
    let top = zstd(&layer(&[("etc/.wh.os-release", EntryType::Regular, "")]));
    let other = gzip(&layer(&[("marker", EntryType::Regular, "two")]));
    reg.image("1", &[(base.clone(), GZ), (top, ZST)]);
    reg.image("2", &[(base, GZ), (other, GZ)]);
    let host = start(Arc::new(Mutex::new(reg))).await;

    let first = pull_as(&paths, &agent, format!("{host}/x:1"), "one")
        .await
        .unwrap();
    let second = pull_as(&paths, &agent, format!("{host}/x:2"), "two")
        .await
        .unwrap();

    let cached = |r: &RegistryPullReport| r.layers.iter().map(|l| l.cached).collect::<Vec<_>>();
    assert_eq!(cached(&first), [false, false]);
    assert_eq!(cached(&second), [true, false]);
    let etc = ls(
        Path::new(&first.image.dir).join("rootfs.ext4").as_path(),
        "/etc",
    );
    assert!(
        !etc.contains("os-release") && etc.contains("hostname"),
        "{etc}"
    );
    assert!(ls(
        Path::new(&second.image.dir).join("rootfs.ext4").as_path(),
        "/"
    )
    .contains("marker"));
    assert_eq!(first.image.run.cmd, ["/bin/sh"]);
    assert_eq!(first.image.run.working_dir.as_deref(), Some("/srv"));
    assert_eq!(first.image.lacks, ["sshd"]);
}

#[tokio::test]
async fn escaping_layer_is_refused_and_leaves_nothing() {
    if !ready() {
        return;
    }
    let (_root, paths, agent) = setup();
    let mut reg = Registry::default();
    reg.image(
        "1",
        &[(gzip(&layer(&[("../../x", EntryType::Regular, "x")])), GZ)],
    );
    let host = start(Arc::new(Mutex::new(reg))).await;

    let err = pull_as(&paths, &agent, format!("{host}/x:1"), "evil")
        .await
        .unwrap_err();

    assert!(matches!(err, ImageError::UnsafeEntry { .. }), "{err}");
    assert_nothing_left(&paths);
}

#[tokio::test]
async fn layer_through_a_symlink_stays_in_the_tree() {
    if !ready() {
        return;
    }
    let (_root, paths, agent) = setup();
    let mut reg = Registry::default();
    let link = layer(&[("etc", EntryType::Symlink, "/host-etc-escape")]);
    let write = layer(&[("etc/passwd", EntryType::Regular, "owned")]);
    reg.image(
        "1",
        &[
            (gzip(&rootfs_layer()), GZ),
            (gzip(&link), GZ),
            (gzip(&write), GZ),
        ],
    );
    let host = start(Arc::new(Mutex::new(reg))).await;

    let pulled = pull_as(&paths, &agent, format!("{host}/x:1"), "link")
        .await
        .unwrap();

    assert!(!Path::new("/host-etc-escape").exists());
    let rootfs = Path::new(&pulled.image.dir).join("rootfs.ext4");
    assert!(ls(&rootfs, "/host-etc-escape").contains("passwd"));
}

#[tokio::test]
async fn wrong_and_truncated_layers_are_refused_and_leave_nothing() {
    if !ready() {
        return;
    }
    let (_root, paths, agent) = setup();
    let mut reg = Registry::default();
    let wrong = reg.image("wrong", &[(gzip(&rootfs_layer()), GZ)]);
    let good = gzip(&layer(&[("etc/motd", EntryType::Regular, "hello there")]));
    let short = reg.image("short", &[(good.clone(), GZ)]);
    let mut flipped = gzip(&rootfs_layer());
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    reg.served.insert(wrong[0].clone(), flipped);
    reg.served
        .insert(short[0].clone(), good[..good.len() / 2].to_vec());
    let host = start(Arc::new(Mutex::new(reg))).await;

    let wrong_err = pull_as(&paths, &agent, format!("{host}/x:wrong"), "w")
        .await
        .unwrap_err();
    let short_err = pull_as(&paths, &agent, format!("{host}/x:short"), "s")
        .await
        .unwrap_err();

    assert!(wrong_err.to_string().contains("sha256"), "{wrong_err}");
    assert!(short_err.to_string().contains("bytes"), "{short_err}");
    assert_eq!(short_err.code(), ErrorCode::InvalidArgument);
    let cache = Cache::new(&paths.cache_dir);
    let cached: Vec<_> = fs_err::read_dir(cache.dir().join("sha256"))
        .unwrap()
        .collect();
    assert!(cached.is_empty(), "{cached:?}");
    assert_nothing_left(&paths);
}

#[tokio::test]
async fn unknown_tag_is_not_found_with_a_hint() {
    if !ready() {
        return;
    }
    let (_root, paths, agent) = setup();
    let host = start(Arc::new(Mutex::new(Registry::default()))).await;

    let err = pull_as(&paths, &agent, format!("{host}/x:nope"), "n")
        .await
        .unwrap_err();

    assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
    assert!(err.hint().unwrap().contains("tag"), "{err}");
    assert_nothing_left(&paths);
}

#[tokio::test]
async fn a_token_login_is_renewed_when_its_token_runs_out_mid_pull() {
    if !ready() {
        return;
    }
    let (_root, paths, agent) = setup();
    let mut reg = Registry::default();
    reg.image("1", &[(gzip(&rootfs_layer()), GZ)]);
    let (host, tokens) = start_with_tokens(Arc::new(Mutex::new(reg))).await;

    let refused = pull_with(
        &paths,
        &agent,
        format!("{host}/x:1"),
        "x",
        Some(("dev", "wrong")),
    )
    .await
    .unwrap_err();
    let pulled = pull_with(&paths, &agent, format!("{host}/x:1"), "x", Some(LOGIN))
        .await
        .unwrap();

    assert_eq!(refused.code(), ErrorCode::PermissionDenied, "{refused}");
    assert_eq!(pulled.layers.len(), 1);
    let t = tokens.lock().unwrap();
    // The manifest and config on the first token, the layer on a second one.
    assert_eq!(t.issued, 2);
    assert!(
        t.asked
            .iter()
            .all(|q| q.contains("scope=repository%3Ax%3Apull") && q.contains("service=fake")),
        "{:?}",
        t.asked
    );
}
