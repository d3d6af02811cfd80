//! The registry side of a pull: the linux/amd64 manifest and its config (an index
//! resolved to its linux/amd64 entry), fetched capped and checked against their
//! digests, then each layer into the cache through `oci-client`, with its size and
//! digest checked as it streams.

use base64::Engine as _;
use futures::StreamExt;
use oci_client::client::{linux_amd64_resolver, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciEnvelope, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::cache::{Cache, Digest};
use crate::image::error::{ImageError, IoContext, RegistryFailure};

/// A registry that answered for a reference, and its manifest and config.
pub struct Resolved {
    pub client: Client,
    pub manifest: OciImageManifest,
    /// The image manifest's digest (the linux/amd64 entry's, for an index).
    pub digest: String,
    pub config: String,
}

fn client(protocol: ClientProtocol, insecure: bool) -> Client {
    Client::new(ClientConfig {
        protocol,
        accept_invalid_certificates: insecure,
        platform_resolver: Some(Box::new(linux_amd64_resolver)),
        connect_timeout: Some(std::time::Duration::from_secs(15)),
        read_timeout: Some(std::time::Duration::from_secs(60)),
        ..Default::default()
    })
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
    let https = client(ClientProtocol::Https, insecure);
    match documents(https, "https", reference, auth, insecure).await {
        Err(Fetch::NoAnswer(e)) if insecure => {
            tracing::debug!(cause = %e, "no HTTPS answer; trying plain HTTP");
            let http = client(
                ClientProtocol::HttpsExcept(vec![reference.resolve_registry().to_string()]),
                true,
            );
            documents(http, "http", reference, auth, true)
                .await
                .map_err(|e| e.into_image(reference))
        }
        answer => answer.map_err(|e| e.into_image(reference)),
    }
}

/// Most a manifest, an index or an image config may hold: real ones are a few KiB, and
/// `oci-client` reads them whole, so banger fetches them itself, capped.
const MAX_DOCUMENT: u64 = 4 << 20;

/// The media types a manifest request accepts.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Why fetching the documents of an image failed.
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
/// digest, and its config, each checked against the digest it was asked by. `client`
/// logs in (a token it keeps for the layers); the documents come over `scheme`.
async fn documents(
    client: Client,
    scheme: &'static str,
    reference: &Reference,
    auth: &RegistryAuth,
    insecure: bool,
) -> Result<Resolved, Fetch> {
    let authz = match client.auth(reference, auth, RegistryOperation::Pull).await {
        Ok(Some(token)) => Some(format!("Bearer {token}")),
        Ok(None) => match auth {
            RegistryAuth::Basic(user, password) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            _ => None,
        },
        Err(OciDistributionError::RequestError(e)) => return Err(Fetch::NoAnswer(chain(&e))),
        Err(e) => return Err(Fetch::Registry(failure(reference, e))),
    };
    let get = Get {
        base: format!(
            "{scheme}://{}/v2/{}",
            reference.resolve_registry(),
            reference.repository()
        ),
        authz,
        insecure,
        reference: reference.clone(),
    };
    let top = reference
        .digest()
        .or(reference.tag())
        .unwrap_or("latest")
        .to_string();
    let (body, digest) = get.document("manifests", &top, reference.digest()).await?;
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
            let (body, digest) = get.document("manifests", &chosen, Some(&chosen)).await?;
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
    let (config, _) = get
        .document("blobs", &config_digest, Some(&config_digest))
        .await?;
    let config = String::from_utf8(config)
        .map_err(|_| Fetch::Registry(bad(reference, "its image config is not UTF-8".into())))?;
    Ok(Resolved {
        client,
        manifest,
        digest,
        config,
    })
}

/// GETs of one repository's documents.
struct Get {
    /// `SCHEME://REGISTRY/v2/REPOSITORY`.
    base: String,
    authz: Option<String>,
    insecure: bool,
    reference: Reference,
}

impl Get {
    /// `kind/name` (at most [`MAX_DOCUMENT`] bytes) and its digest, which must be
    /// `want` when given.
    async fn document(
        &self,
        kind: &'static str,
        name: &str,
        want: Option<&str>,
    ) -> Result<(Vec<u8>, String), Fetch> {
        let url = format!("{}/{kind}/{name}", self.base);
        let (authz, insecure) = (self.authz.clone(), self.insecure);
        let got = tokio::task::spawn_blocking(move || get_capped(&url, authz.as_deref(), insecure))
            .await
            .map_err(|e| Fetch::NoAnswer(e.to_string()))??;
        let (status, body) = got;
        let reference = &self.reference;
        if !(200..300).contains(&status) {
            // Said as oci-client says it, so one mapping covers both.
            let url = format!("{}/{kind}/{name}", self.base);
            let e = match serde_json::from_slice::<OciEnvelope>(&body) {
                Ok(envelope) => OciDistributionError::RegistryError { envelope, url },
                Err(_) => OciDistributionError::ServerError {
                    code: status,
                    url,
                    message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                },
            };
            return Err(Fetch::Registry(failure(reference, e)));
        }
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
}

/// GETs `url`: its status and at most [`MAX_DOCUMENT`] bytes of body (more is an
/// error). Blocking.
fn get_capped(url: &str, authz: Option<&str>, insecure: bool) -> Result<(u16, Vec<u8>), Fetch> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(std::time::Duration::from_secs(15)))
        .timeout_per_read(Some(std::time::Duration::from_secs(60)))
        .timeout_global(Some(std::time::Duration::from_secs(300)))
        .http_status_as_error(false)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .disable_verification(insecure)
                .build(),
        )
        .build()
        .into();
    let mut req = agent.get(url).header("Accept", MANIFEST_TYPES);
    if let Some(authz) = authz {
        req = req.header("Authorization", authz);
    }
    let mut resp = req.call().map_err(|e| Fetch::NoAnswer(chain(&e)))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_DOCUMENT)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => Fetch::Registry(ImageError::Registry {
                reference: url.to_string(),
                reason: format!("it sent more than {} MiB for {url}", MAX_DOCUMENT >> 20),
                failure: RegistryFailure::BadContent,
            }),
            e => Fetch::NoAnswer(chain(&e)),
        })?;
    Ok((status, body))
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

/// One layer to apply: its checked digest and size, and its descriptor for the fetch.
pub struct Layer {
    pub digest: Digest,
    pub bytes: u64,
    pub descriptor: OciDescriptor,
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
            Ok(Layer {
                digest,
                bytes,
                descriptor: d.clone(),
            })
        })
        .collect()
}

/// Downloads `layer` into `cache`, calling `on_bytes` with the bytes received so far;
/// only a download of the manifest's size and digest enters the cache.
pub async fn download(
    client: &Client,
    reference: &Reference,
    layer: &Layer,
    cache: &Cache,
    on_bytes: &(dyn Fn(u64) + Send + Sync),
) -> Result<(), ImageError> {
    let short = layer.digest.short();
    let partial = cache.partial(&layer.digest);
    let mut stream = client
        .pull_blob_stream(reference, &layer.descriptor)
        .await
        .map_err(|e| failure(reference, e))?;
    let mut file = tokio::fs::File::create(partial.path())
        .await
        .ctx(|| format!("create {}", partial.path().display()))?;
    let mut hasher = Sha256::new();
    let mut got: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            bad(
                reference,
                format!(
                    "layer {short} broke off after {got} of {} bytes ({e})",
                    layer.bytes
                ),
            )
        })?;
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
fn failure(reference: &Reference, e: OciDistributionError) -> ImageError {
    use OciDistributionError as E;
    use RegistryFailure as F;
    let (failure, reason) = match &e {
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

    /// A registry on the loopback that answers `/v2/` and then streams `manifest_bytes`
    /// of junk for any manifest; answers how many bytes it managed to send.
    fn endless_registry(manifest_bytes: usize) -> (String, std::thread::JoinHandle<usize>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let mut sent = 0;
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { break };
                let mut line = String::new();
                if BufReader::new(&conn).read_line(&mut line).is_err() {
                    continue;
                }
                if line.starts_with("GET /v2/ ") {
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}");
                } else if line.starts_with("GET /v2/evil/manifests/") {
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\ncontent-length: {manifest_bytes}\r\n\r\n"
                    );
                    let chunk = vec![b' '; 64 << 10];
                    while sent < manifest_bytes && conn.write_all(&chunk).is_ok() {
                        sent += chunk.len();
                    }
                    return sent;
                }
            }
            sent
        });
        (addr, server)
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
