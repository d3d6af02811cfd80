//! `image pull REF` from an OCI registry: resolve the reference to its linux/amd64
//! image manifest (`oci-client`: Docker Hub's anonymous bearer tokens, basic auth from
//! the credentials the CLI passed), download the layers the cache lacks with their
//! digests checked, then apply them in order with the whiteout-safe layer code of
//! `image import` (each layer's digest checked again as it is read from the cache) and
//! make the image as an import does. The image config's entrypoint, cmd, env and
//! working directory are kept in the image's manifest.

mod cache;
mod config;
mod fetch;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_host::config::{Limits, Paths};
use banger_wire::api::{PulledLayer, RegistryPullReport, RegistryPullSpec};
use banger_wire::reference::local_name;
use futures::{StreamExt, TryStreamExt};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use sha2::{Digest as _, Sha256};

pub use cache::Cache;
pub use config::exec_defaults;

use super::error::{ImageError, RegistryFailure};
use super::import::{self, Recipe};
use super::manifest::Origin;
use super::{boot, layers, name::validate_name, oci, rootfs, Progress};

/// Layers downloaded at once.
const PARALLEL: usize = 3;

/// Receives progress from async and blocking code alike.
pub type SharedProgress = Arc<dyn Fn(Progress) + Send + Sync>;

/// Pulls `spec.reference` into an image named `spec.name` (default: the reference's
/// [`local_name`]). Nothing is left behind on failure but verified layers in the cache,
/// which the next pull reuses and `banger prune` removes.
pub async fn pull(
    paths: &Paths,
    spec: RegistryPullSpec,
    agent_bin: PathBuf,
    limits: Limits,
    progress: SharedProgress,
) -> Result<RegistryPullReport, ImageError> {
    let reference: Reference = spec
        .reference
        .parse()
        .map_err(|e: oci_client::ParseError| ImageError::BadReference {
            reference: spec.reference.clone(),
            reason: e.to_string(),
        })?;
    let name = spec
        .name
        .clone()
        .unwrap_or_else(|| local_name(&spec.reference));
    check_before_download(paths, &name, &agent_bin)?;
    let cache = Cache::new(&paths.cache_dir);
    let _held = cache.shared()?;

    progress(Progress::step("resolve", reference.whole()));
    let auth = match spec.credentials {
        Some(c) => RegistryAuth::Basic(c.username, c.password),
        None => RegistryAuth::Anonymous,
    };
    let resolved = fetch::resolve(&reference, spec.insecure, &auth).await?;
    let run = config::parse(&resolved.config).map_err(|reason| ImageError::Registry {
        reference: reference.whole(),
        reason,
        failure: RegistryFailure::BadContent,
    })?;
    let all = fetch::layers(&reference, &resolved.manifest)?;
    let total: u64 = all.iter().map(|l| l.bytes).sum();
    if total > limits.max_bytes {
        return Err(ImageError::TooLarge {
            what: format!("{reference} ({} MiB of layers)", total >> 20),
            limit: format!("{} MiB", limits.max_bytes >> 20),
            setting: "import_max_mib",
        });
    }
    let pulled = fetch_layers(&resolved, &reference, &all, &cache, &progress).await?;
    tracing::info!(
        reference = %reference,
        downloaded = pulled.iter().filter(|l| !l.cached).count(),
        cached = pulled.iter().filter(|l| l.cached).count(),
        "layers ready"
    );

    let resolved_digest = resolved.digest.clone();
    let (whole, manifest_digest) = (reference.whole(), resolved.digest.clone());
    let layer_digests: Vec<String> = all.iter().map(|l| l.digest.as_str().to_string()).collect();
    let paths = paths.clone();
    let shown = PathBuf::from(&whole);
    let work_name = name.clone();
    let image = tokio::task::spawn_blocking(move || {
        let recipe = Recipe {
            name: &work_name,
            shown: &shown,
            agent_bin: &agent_bin,
            origin: Box::new(move |agent_sha256| {
                let inputs = format!("pull\0{whole}\0{manifest_digest}\0{agent_sha256}");
                let inputs = format!("sha256:{}", hex::encode(Sha256::digest(inputs)));
                let origin = Origin::Registry {
                    reference: whole,
                    manifest_digest,
                    layers: layer_digests,
                    agent_sha256,
                };
                (origin, inputs)
            }),
            run,
        };
        let progress = progress.clone();
        import::make(&paths, recipe, &*progress, |_, tree| {
            apply(&cache, &all, tree, &shown, limits, &*progress)
        })
    })
    .await
    .map_err(|e| ImageError::Io {
        action: "make the pulled image".into(),
        source: std::io::Error::other(e),
    })??;
    Ok(RegistryPullReport {
        image: image.info(),
        reference: reference.whole(),
        manifest_digest: resolved_digest,
        layers: pulled,
    })
}

/// What the image step would refuse, refused before anything is downloaded.
fn check_before_download(paths: &Paths, name: &str, agent_bin: &Path) -> Result<(), ImageError> {
    validate_name(name)?;
    rootfs::read_agent(agent_bin)?;
    if !nix::unistd::geteuid().is_root() {
        return Err(ImageError::NeedsRoot);
    }
    boot::latest(&paths.cache_dir)?;
    if paths.images_dir().join(name).exists() {
        return Err(ImageError::AlreadyExists { name: name.into() });
    }
    Ok(())
}

/// Makes sure every layer is in the cache, downloading the missing ones a few at a
/// time; one progress bar per layer.
async fn fetch_layers(
    resolved: &fetch::Resolved,
    reference: &Reference,
    all: &[fetch::Layer],
    cache: &Cache,
    progress: &SharedProgress,
) -> Result<Vec<PulledLayer>, ImageError> {
    let mut pulled: Vec<(usize, PulledLayer)> = futures::stream::iter(0..all.len())
        .map(|i| async move {
            let layer = &all[i];
            let phase = format!("layer {}", layer.digest.short());
            let bar = |done: u64, what: &str| {
                progress(Progress::bytes(phase.clone(), done, layer.bytes, what));
            };
            let cached = cache.has(&layer.digest);
            if cached {
                bar(layer.bytes, "cached");
            } else {
                let step = (layer.bytes / 100).max(1 << 20);
                let last = std::sync::atomic::AtomicU64::new(0);
                fetch::download(resolved, reference, layer, cache, &|got| {
                    if got - last.load(std::sync::atomic::Ordering::Relaxed) >= step {
                        last.store(got, std::sync::atomic::Ordering::Relaxed);
                        bar(got, "downloading");
                    }
                })
                .await?;
                bar(layer.bytes, "downloaded");
            }
            Ok::<_, ImageError>((
                i,
                PulledLayer {
                    digest: layer.digest.as_str().to_string(),
                    bytes: layer.bytes,
                    cached,
                },
            ))
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<_>>()
        .await?;
    pulled.sort_by_key(|(i, _)| *i);
    Ok(pulled.into_iter().map(|(_, l)| l).collect())
}

/// Applies the cached layers onto `tree`, bottom first, within `limits`.
fn apply(
    cache: &Cache,
    all: &[fetch::Layer],
    tree: &Path,
    shown: &Path,
    limits: Limits,
    progress: super::ProgressFn<'_>,
) -> Result<(), ImageError> {
    let budget = layers::Budget::new(limits);
    fs_err::create_dir_all(tree).map_err(|source| ImageError::Io {
        action: "create the root tree".into(),
        source,
    })?;
    for (i, layer) in all.iter().enumerate() {
        progress(Progress {
            phase: "unpack".into(),
            done: i as u64,
            total: Some(all.len() as u64),
            message: Some(format!("layer {} of {}", i + 1, shown.display())),
        });
        let entry = oci::Layer {
            path: Cache::rel(&layer.digest),
            digest: Some(layer.digest.as_str().to_string()),
        };
        import::apply_layer(cache.dir(), &entry, tree, &budget)?;
    }
    Ok(())
}
