//! The registry side of a pull, spoken by banger itself over `ureq` so that nothing a
//! registry sends is read without a bound: the login (the distribution spec's token
//! flow), the linux/amd64 manifest and its config (an index resolved to its
//! linux/amd64 entry), each capped and checked against its digest, then each layer into
//! the cache, with its size and digest checked as it streams. `oci-client` gives the
//! types, the platform choice and the error codes.

use std::io::Read as _;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use oci_client::client::linux_amd64_resolver;
use oci_client::errors::{OciDistributionError, OciEnvelope, OciErrorCode};
use oci_client::manifest::{OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::cache::{Cache, Digest};
use crate::image::error::{ImageError, IoContext, RegistryFailure};

/// A registry that answered for a reference, and its manifest and config.
pub struct Resolved {
    pub session: Session,
    pub manifest: OciImageManifest,
    /// The image manifest's digest (the linux/amd64 entry's, for an index).
    pub digest: String,
    pub config: String,
}

/// Fetches the manifest and config of `reference`. `insecure` (always for a registry
/// on the loopback, as docker has it): HTTPS with any certificate, then plain HTTP when
/// TLS gets no answer.
pub async fn resolve(
    reference: &Reference,
    insecure: bool,
    auth: &RegistryAuth,
) -> Result<Resolved, ImageError> {
    let insecure = insecure || on_loopback(reference.resolve_registry());
    match documents(Session::new("https", reference, auth, insecure)).await {
        Err(Fetch::NoAnswer(e)) if insecure => {
            tracing::debug!(cause = %e, "no HTTPS answer; trying plain HTTP");
            documents(Session::new("http", reference, auth, true))
                .await
                .map_err(|e| e.into_image(reference))
        }
        answer => answer.map_err(|e| e.into_image(reference)),
    }
}

/// Most a manifest, an index, an image config or a token answer may hold: real ones
/// are a few KiB.
const MAX_DOCUMENT: u64 = 4 << 20;

/// The media types a manifest request accepts.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Why talking to a registry failed.
enum Fetch {
    /// No answer over this protocol (another may answer).
    NoAnswer(String),
    Registry(ImageError),
}

impl Fetch {
    fn into_image(self, reference: &Reference) -> ImageError {
        match self {
            Fetch::NoAnswer(reason) => ImageError::Registry {
                reference: reference.whole(),
                reason,
                failure: RegistryFailure::Unreachable,
            },
            Fetch::Registry(e) => e,
        }
    }
}

/// The linux/amd64 manifest of `reference` (through its index, if it has one), its
/// digest, and its config, each checked against the digest it was asked by.
async fn documents(session: Session) -> Result<Resolved, Fetch> {
    session.login().await?;
    let reference = &session.reference;
    let top = reference
        .digest()
        .or(reference.tag())
        .unwrap_or("latest")
        .to_string();
    let (body, digest) = session
        .document("manifests", &top, reference.digest())
        .await?;
    let bad_json = |e: serde_json::Error| {
        Fetch::Registry(bad(reference, format!("its manifest is not valid: {e}")))
    };
    let (manifest, digest) = match serde_json::from_slice::<OciManifest>(&body).map_err(bad_json)? {
        OciManifest::Image(m) => (m, digest),
        OciManifest::ImageIndex(index) => {
            let Some(chosen) = linux_amd64_resolver(&index.manifests) else {
                return Err(Fetch::Registry(bad(
                    reference,
                    "it has no linux/amd64 image".into(),
                )));
            };
            let (body, digest) = session
                .document("manifests", &chosen, Some(&chosen))
                .await?;
            match serde_json::from_slice::<OciManifest>(&body).map_err(bad_json)? {
                OciManifest::Image(m) => (m, digest),
                OciManifest::ImageIndex(_) => {
                    return Err(Fetch::Registry(bad(
                        reference,
                        "its linux/amd64 entry is another index".into(),
                    )))
                }
            }
        }
    };
    let config_digest = manifest.config.digest.clone();
    let (config, _) = session
        .document("blobs", &config_digest, Some(&config_digest))
        .await?;
    let config = String::from_utf8(config)
        .map_err(|_| Fetch::Registry(bad(reference, "its image config is not UTF-8".into())))?;
    Ok(Resolved {
        session,
        manifest,
        digest,
        config,
    })
}

/// One repository of one registry over one scheme, and the login its requests carry.
pub struct Session {
    scheme: &'static str,
    reference: Reference,
    auth: RegistryAuth,
    /// One for every request of the pull: TLS set up once, connections kept.
    agent: ureq::Agent,
    /// The `Authorization` requests carry: none, the caller's login, or a token.
    authz: Mutex<Option<String>>,
}

/// A capped answer to a GET.
struct Answer {
    status: u16,
    /// Its `WWW-Authenticate`.
    challenge: Option<String>,
    body: Vec<u8>,
}

impl Session {
    fn new(
        scheme: &'static str,
        reference: &Reference,
        auth: &RegistryAuth,
        insecure: bool,
    ) -> Session {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .disable_verification(insecure)
                    .build(),
            )
            .build()
            .into();
        Session {
            scheme,
            reference: reference.clone(),
            auth: auth.clone(),
            agent,
            authz: Mutex::new(None),
        }
    }

    /// `SCHEME://REGISTRY/v2/REPOSITORY/kind/name`.
    fn url(&self, kind: &str, name: &str) -> String {
        format!(
            "{}://{}/v2/{}/{kind}/{name}",
            self.scheme,
            self.reference.resolve_registry(),
            self.reference.repository()
        )
    }

    fn authz(&self) -> Option<String> {
        self.authz.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Logs in as the registry asks (`GET /v2/`): with none, with the caller's login
    /// (`Basic`), or with a pull token from the realm of its `Bearer` challenge, asked
    /// with the caller's login when there is one. Again when a token ran out.
    async fn login(&self) -> Result<(), Fetch> {
        let basic = match &self.auth {
            RegistryAuth::Basic(user, password) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            RegistryAuth::Bearer(token) => Some(format!("Bearer {token}")),
            RegistryAuth::Anonymous => None,
        };
        let ping = format!(
            "{}://{}/v2/",
            self.scheme,
            self.reference.resolve_registry()
        );
        let answer = self.get(Get::to(ping)).await?;
        let authz = match answer.challenge.as_deref().and_then(bearer) {
            None => basic,
            Some((realm, service)) => {
                let mut query = vec![(
                    "scope".to_string(),
                    format!("repository:{}:pull", self.reference.repository()),
                )];
                query.extend(service.map(|s| ("service".to_string(), s)));
                let ask = Get {
                    query,
                    authz: basic,
                    ..Get::to(realm)
                };
                let answer = self.get(ask).await?;
                if !(200..300).contains(&answer.status) {
                    let said = String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)]);
                    let e = OciDistributionError::AuthenticationFailure(said.into_owned());
                    return Err(Fetch::Registry(failure(&self.reference, &e)));
                }
                Some(format!("Bearer {}", token(&self.reference, &answer.body)?))
            }
        };
        *self.authz.lock().unwrap_or_else(|p| p.into_inner()) = authz;
        Ok(())
    }

    /// `kind/name` (at most [`MAX_DOCUMENT`] bytes) and its digest, which must be
    /// `want` when given.
    async fn document(
        &self,
        kind: &'static str,
        name: &str,
        want: Option<&str>,
    ) -> Result<(Vec<u8>, String), Fetch> {
        let url = self.url(kind, name);
        let ask = |authz| Get {
            authz,
            accept: (kind == "manifests").then_some(MANIFEST_TYPES),
            ..Get::to(url.clone())
        };
        let mut answer = self.get(ask(self.authz())).await?;
        if answer.status == 401 {
            self.login().await?;
            answer = self.get(ask(self.authz())).await?;
        }
        let reference = &self.reference;
        if !(200..300).contains(&answer.status) {
            return Err(Fetch::Registry(failure(
                reference,
                &refusal(answer.status, &answer.body, url),
            )));
        }
        let body = answer.body;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        if let Some(want) = want {
            if want != digest {
                return Err(Fetch::Registry(bad(
                    reference,
                    format!("{name} does not match its digest (got {digest})"),
                )));
            }
        }
        Ok((body, digest))
    }

    /// Blob `digest`'s answer, its body unread; logs in again once when refused.
    async fn blob(&self, digest: &str) -> Result<ureq::http::Response<ureq::Body>, Fetch> {
        let url = self.url("blobs", digest);
        let ask = |authz| Get {
            authz,
            ..Get::to(url.clone())
        };
        let mut resp = self.open(ask(self.authz()), None).await?;
        if resp.status() == 401 {
            self.login().await?;
            resp = self.open(ask(self.authz()), None).await?;
        }
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body = read_capped(&url, resp.into_body()).unwrap_or_default();
            return Err(Fetch::Registry(failure(
                &self.reference,
                &refusal(status, &body, url),
            )));
        }
        Ok(resp)
    }

    /// Sends `ask`: its answer's status, challenge and at most [`MAX_DOCUMENT`] bytes of
    /// body (more is an error).
    async fn get(&self, ask: Get) -> Result<Answer, Fetch> {
        let url = ask.url.clone();
        let resp = self.open(ask, Some(Duration::from_secs(300))).await?;
        let status = resp.status().as_u16();
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = tokio::task::spawn_blocking(move || read_capped(&url, resp.into_body()))
            .await
            .map_err(|e| Fetch::NoAnswer(e.to_string()))??;
        Ok(Answer {
            status,
            challenge,
            body,
        })
    }

    /// Sends `ask` and answers its head; `timeout` bounds the whole exchange (a layer's
    /// has none: each read has its own). Redirects are followed without the
    /// `Authorization`.
    async fn open(
        &self,
        ask: Get,
        timeout: Option<Duration>,
    ) -> Result<ureq::http::Response<ureq::Body>, Fetch> {
        let agent = self.agent.clone();
        tokio::task::spawn_blocking(move || {
            let mut req = agent.get(&ask.url).config().timeout_global(timeout).build();
            for (k, v) in &ask.query {
                req = req.query(k, v);
            }
            if let Some(accept) = ask.accept {
                req = req.header("Accept", accept);
            }
            if let Some(authz) = ask.authz {
                req = req.header("Authorization", authz);
            }
            req.call().map_err(|e| Fetch::NoAnswer(chain(&e)))
        })
        .await
        .map_err(|e| Fetch::NoAnswer(e.to_string()))?
    }
}

/// A registry's refusal, said as `oci-client` says it, so that one mapping covers all.
fn refusal(status: u16, body: &[u8], url: String) -> OciDistributionError {
    match serde_json::from_slice::<OciEnvelope>(body) {
        Ok(envelope) => OciDistributionError::RegistryError { envelope, url },
        Err(_) => OciDistributionError::ServerError {
            code: status,
            url,
            message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        },
    }
}

/// The realm and service of a `Bearer` challenge.
fn bearer(header: &str) -> Option<(String, Option<String>)> {
    http_auth::ChallengeParser::new(header)
        .filter_map(Result::ok)
        .find(|c| c.scheme.eq_ignore_ascii_case("Bearer"))
        .and_then(|c| {
            let param = |name: &str| {
                c.params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_unescaped())
            };
            Some((param("realm")?, param("service")))
        })
}

/// The token of a token service's answer (`token`, or OAuth's `access_token`).
fn token(reference: &Reference, body: &[u8]) -> Result<String, Fetch> {
    #[derive(serde::Deserialize)]
    struct Answer {
        token: Option<String>,
        access_token: Option<String>,
    }
    serde_json::from_slice::<Answer>(body)
        .ok()
        .and_then(|a| a.token.or(a.access_token))
        .filter(|t| !t.is_empty() && !t.contains(char::is_control))
        .ok_or_else(|| {
            Fetch::Registry(bad(reference, "its token service answered no token".into()))
        })
}

/// A GET: its URL and query, and the `Authorization` and `Accept` it sends.
struct Get {
    url: String,
    query: Vec<(String, String)>,
    authz: Option<String>,
    accept: Option<&'static str>,
}

impl Get {
    fn to(url: String) -> Get {
        Get {
            url,
            query: Vec::new(),
            authz: None,
            accept: None,
        }
    }
}

/// At most [`MAX_DOCUMENT`] bytes of `body` (more is an error). Blocking.
fn read_capped(url: &str, mut body: ureq::Body) -> Result<Vec<u8>, Fetch> {
    body.with_config()
        .limit(MAX_DOCUMENT)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => Fetch::Registry(ImageError::Registry {
                reference: url.to_string(),
                reason: format!("it sent more than {} MiB for {url}", MAX_DOCUMENT >> 20),
                failure: RegistryFailure::BadContent,
            }),
            e => Fetch::NoAnswer(chain(&e)),
        })
}

/// `localhost`, `127.x.x.x` or `[::1]`, with or without a port.
fn on_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => registry.split(':').next().unwrap_or_default(),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One layer to apply: its checked digest and size.
pub struct Layer {
    pub digest: Digest,
    pub bytes: u64,
}

/// The manifest's layers, bottom first; refuses what is not a tar layer banger can
/// fetch and unpack (foreign layers, artifacts, odd digests).
pub fn layers(
    reference: &Reference,
    manifest: &OciImageManifest,
) -> Result<Vec<Layer>, ImageError> {
    if manifest.layers.is_empty() {
        return Err(bad(reference, "its manifest lists no layers".into()));
    }
    manifest
        .layers
        .iter()
        .map(|d| {
            let digest = Digest::parse(&d.digest).ok_or_else(|| {
                bad(
                    reference,
                    format!("layer digest {:?} is not sha256", d.digest),
                )
            })?;
            let tar = d.media_type.contains(".tar") || d.media_type.contains("rootfs.diff");
            if !tar || d.media_type.contains("nondistributable") || d.media_type.contains("foreign")
            {
                return Err(bad(
                    reference,
                    format!(
                        "layer {} has media type {:?}, not a tar layer",
                        digest.short(),
                        d.media_type
                    ),
                ));
            }
            let bytes = u64::try_from(d.size).map_err(|_| {
                bad(
                    reference,
                    format!("layer {} has a negative size", digest.short()),
                )
            })?;
            Ok(Layer { digest, bytes })
        })
        .collect()
}

/// Downloads `layer` into `cache`, calling `on_bytes` with the bytes received so far;
/// only a download of the manifest's size and digest enters the cache.
pub async fn download(
    resolved: &Resolved,
    reference: &Reference,
    layer: &Layer,
    cache: &Cache,
    on_bytes: &(dyn Fn(u64) + Send + Sync),
) -> Result<(), ImageError> {
    let short = layer.digest.short();
    let partial = cache.partial(&layer.digest);
    let resp = resolved
        .session
        .blob(layer.digest.as_str())
        .await
        .map_err(|e| e.into_image(reference))?;
    // Read on the blocking pool, a chunk at a time; one byte past the manifest's size
    // is enough to refuse it.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    let limit = layer.bytes + 1;
    let reader = tokio::task::spawn_blocking(move || {
        let mut body = resp.into_body().into_reader().take(limit);
        loop {
            let mut chunk = vec![0; 256 << 10];
            let read = body.read(&mut chunk).map(|n| {
                chunk.truncate(n);
                chunk
            });
            let done = matches!(&read, Ok(c) if c.is_empty()) || read.is_err();
            if tx.blocking_send(read).is_err() || done {
                return;
            }
        }
    });
    let mut file = tokio::fs::File::create(partial.path())
        .await
        .ctx(|| format!("create {}", partial.path().display()))?;
    let mut hasher = Sha256::new();
    let mut got: u64 = 0;
    while let Some(chunk) = rx.recv().await {
        let chunk = chunk.map_err(|e| {
            bad(
                reference,
                format!(
                    "layer {short} broke off after {got} of {} bytes ({e})",
                    layer.bytes
                ),
            )
        })?;
        if chunk.is_empty() {
            break;
        }
        got += chunk.len() as u64;
        if got > layer.bytes {
            return Err(bad(
                reference,
                format!(
                    "layer {short} is larger than the {} bytes its manifest gives",
                    layer.bytes
                ),
            ));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .ctx(|| format!("write {}", partial.path().display()))?;
        on_bytes(got);
    }
    drop(rx);
    let _ = reader.await;
    file.flush()
        .await
        .ctx(|| format!("write {}", partial.path().display()))?;
    if got != layer.bytes {
        return Err(bad(
            reference,
            format!("layer {short} ended after {got} of {} bytes", layer.bytes),
        ));
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != layer.digest.as_str() {
        return Err(ImageError::DigestMismatch {
            what: format!("layer {short} of {reference}"),
            expected: layer.digest.as_str().to_string(),
            actual,
        });
    }
    partial.keep()
}

fn bad(reference: &Reference, reason: String) -> ImageError {
    ImageError::Registry {
        reference: reference.whole(),
        reason,
        failure: RegistryFailure::BadContent,
    }
}

/// An `oci-client` error in the user's terms. Credentials never appear in them.
fn failure(reference: &Reference, e: &OciDistributionError) -> ImageError {
    use OciDistributionError as E;
    use RegistryFailure as F;
    let (failure, reason) = match e {
        E::RegistryError { envelope, .. } => {
            let failure = match envelope.errors.first().map(|x| &x.code) {
                Some(
                    OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::NotFound
                    | OciErrorCode::BlobUnknown,
                ) => F::NotFound,
                Some(OciErrorCode::Unauthorized | OciErrorCode::Denied) => F::Denied,
                _ => F::BadContent,
            };
            let messages: Vec<String> = envelope.errors.iter().map(|x| x.message.clone()).collect();
            (
                failure,
                format!("the registry answered: {}", messages.join("; ")),
            )
        }
        E::ImageManifestNotFoundError(m) if m.contains("platform") => {
            (F::BadContent, "it has no linux/amd64 image".to_string())
        }
        E::ImageManifestNotFoundError(_) => (F::NotFound, e.to_string()),
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => (F::Denied, e.to_string()),
        E::ServerError { code: 404, .. } => (F::NotFound, e.to_string()),
        E::ServerError {
            code: 401 | 403, ..
        } => (F::Denied, e.to_string()),
        E::ServerError { .. } => (F::Unreachable, e.to_string()),
        E::RequestError(r) => (F::Unreachable, chain(r)),
        _ => (F::BadContent, e.to_string()),
    };
    ImageError::Registry {
        reference: reference.whole(),
        reason,
        failure,
    }
}

/// An error and its causes on one line (reqwest's own message names only the URL).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_told_apart() {
        assert!(on_loopback("localhost:5000"));
        assert!(on_loopback("127.0.0.1:41234"));
        assert!(on_loopback("[::1]:5000"));
        assert!(!on_loopback("ghcr.io"));
        assert!(!on_loopback("10.0.0.1:5000"));
    }

    /// A registry on the loopback: `/v2/` gets `ping(its address)`, and the first GET of
    /// a path starting with `flooded` an answer of `bytes` bytes (starting with `lead`),
    /// streamed; answers how many bytes it managed to send.
    fn endless(
        ping: impl FnOnce(&str) -> String,
        flooded: &'static str,
        lead: &'static str,
        bytes: usize,
    ) -> (String, std::thread::JoinHandle<usize>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let ping = ping(&addr);
        let server = std::thread::spawn(move || {
            let mut sent = 0;
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { break };
                let mut line = String::new();
                if BufReader::new(&conn).read_line(&mut line).is_err() {
                    continue;
                }
                if line.starts_with("GET /v2/ ") {
                    let _ = conn.write_all(ping.as_bytes());
                } else if line.starts_with(&format!("GET {flooded}")) {
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\ncontent-length: {bytes}\r\n\r\n{lead}"
                    );
                    let chunk = vec![b'a'; 64 << 10];
                    while sent < bytes && conn.write_all(&chunk).is_ok() {
                        sent += chunk.len();
                    }
                    return sent;
                }
            }
            sent
        });
        (addr, server)
    }

    /// A registry that streams `manifest_bytes` for any manifest.
    fn endless_registry(manifest_bytes: usize) -> (String, std::thread::JoinHandle<usize>) {
        let ok = |_: &str| "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".to_string();
        endless(ok, "/v2/evil/manifests/", "", manifest_bytes)
    }

    /// A registry whose `/v2/` sends a client to its token service, which then streams
    /// `token_bytes`.
    fn endless_token_service(token_bytes: usize) -> (String, std::thread::JoinHandle<usize>) {
        let challenge = |addr: &str| {
            format!(
                "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer realm=\"http://{addr}/token\",\
                 service=\"evil\"\r\ncontent-length: 0\r\n\r\n"
            )
        };
        endless(challenge, "/token?", "{\"token\":\"", token_bytes)
    }

    #[tokio::test]
    async fn a_token_larger_than_any_real_one_is_refused_unread() {
        let (addr, server) = endless_token_service(1 << 30);
        let reference: Reference = format!("{addr}/evil:1").parse().unwrap();

        let err = match resolve(&reference, true, &RegistryAuth::Anonymous).await {
            Ok(_) => panic!("a 1 GiB token was taken"),
            Err(e) => e,
        };

        assert!(err.to_string().contains("more than 4 MiB"), "{err}");
        let sent = server.join().unwrap();
        assert!(sent < 64 << 20, "{sent} bytes were read");
    }

    #[test]
    fn a_bearer_challenges_realm_and_service_are_read() {
        let both =
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="x""#;

        assert_eq!(
            bearer(both),
            Some((
                "https://auth.example/token".to_string(),
                Some("registry.example".to_string())
            ))
        );
        assert_eq!(
            bearer(r#"Basic realm="r", Bearer realm="t""#),
            Some(("t".to_string(), None))
        );
        assert_eq!(bearer(r#"Basic realm="registry""#), None);
        assert_eq!(bearer("Bearer service=\"no-realm\""), None);
    }

    #[tokio::test]
    async fn a_manifest_larger_than_any_real_one_is_refused_unread() {
        let (addr, server) = endless_registry(1 << 30);
        let reference: Reference = format!("{addr}/evil:1").parse().unwrap();

        let err = match resolve(&reference, true, &RegistryAuth::Anonymous).await {
            Ok(_) => panic!("a 1 GiB manifest was taken"),
            Err(e) => e,
        };

        assert!(err.to_string().contains("more than 4 MiB"), "{err}");
        let sent = server.join().unwrap();
        assert!(sent < 64 << 20, "{sent} bytes were read");
    }
}
