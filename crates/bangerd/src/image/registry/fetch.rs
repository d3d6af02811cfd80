//! The registry side of a pull, through `oci-client`: the linux/amd64 manifest and its
//! config (an index resolved to its linux/amd64 entry), then each layer into the cache
//! with its size and digest checked as it streams.

use futures::StreamExt;
use oci_client::client::{linux_amd64_resolver, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
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
    let (client, answer) = match https.pull_manifest_and_config(reference, auth).await {
        Err(OciDistributionError::RequestError(e)) if insecure => {
            tracing::debug!(cause = %e, "no HTTPS answer; trying plain HTTP");
            let http = client(
                ClientProtocol::HttpsExcept(vec![reference.resolve_registry().to_string()]),
                true,
            );
            let answer = http.pull_manifest_and_config(reference, auth).await;
            (http, answer)
        }
        answer => (https, answer),
    };
    let (manifest, digest, config) = answer.map_err(|e| failure(reference, e))?;
    Ok(Resolved {
        client,
        manifest,
        digest,
        config,
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
}
