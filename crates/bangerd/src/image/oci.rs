//! Finding the ordered layers of a `docker save` archive or an OCI image layout that
//! has been unpacked into a directory. Every file is opened inside that directory
//! without following a symlink and must be a regular file: an archive cannot point the
//! daemon at host files, devices or FIFOs.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::error::{ImageError, IoContext};
use super::layers::clean_relative;

/// Largest `manifest.json`, `index.json` or manifest blob read.
const MAX_JSON: u64 = 4 << 20;

/// One layer file, bottom first, with the digest its name or manifest promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Relative to the layout's directory; open it with [`open`].
    pub path: PathBuf,
    /// `sha256:<hex>` of the file's bytes, when the format records it.
    pub digest: Option<String>,
}

/// What kind of container image a directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `oci-layout` + `index.json` + `blobs/`.
    Oci,
    /// `manifest.json` listing `Layers` (what `docker save` writes).
    DockerSave,
}

/// What `dir` holds; `None` for a plain root tree. An `index.json` or `manifest.json`
/// that is not a regular file is refused rather than read.
pub fn detect(dir: &Path) -> Result<Option<Layout>, ImageError> {
    let present = |name: &str| dir.join(name).symlink_metadata().is_ok();
    if present("oci-layout") && present("index.json") {
        open(dir, Path::new("index.json"))?;
        return Ok(Some(Layout::Oci));
    }
    if !present("manifest.json") {
        return Ok(None);
    }
    let bytes = read_small(dir, Path::new("manifest.json"))?;
    Ok(serde_json::from_slice::<Vec<DockerManifest>>(&bytes)
        .is_ok()
        .then_some(Layout::DockerSave))
}

/// Opens `rel` for reading inside `dir`, following no symlink on the way, and only
/// when it is a regular file.
pub fn open(dir: &Path, rel: &Path) -> Result<fs_err::File, ImageError> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    let shown = dir.join(rel);
    let io = |e: rustix::io::Errno| ImageError::Io {
        action: format!("open {}", shown.display()),
        source: e.into(),
    };
    let not_regular = |kind| ImageError::NotRegular {
        archive: dir.to_path_buf(),
        entry: rel.display().to_string(),
        kind,
    };
    let base = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io)?;
    // O_PATH first: opening a device or FIFO for reading can block or have effects.
    let path_fd = openat2(
        &base,
        rel,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP => not_regular("a symbolic link or under one"),
        rustix::io::Errno::XDEV => not_regular("outside the archive"),
        e => io(e),
    })?;
    let kind =
        rustix::fs::FileType::from_raw_mode(rustix::fs::fstat(&path_fd).map_err(io)?.st_mode);
    match kind {
        rustix::fs::FileType::RegularFile => {}
        rustix::fs::FileType::Directory => return Err(not_regular("a directory")),
        rustix::fs::FileType::Symlink => return Err(not_regular("a symbolic link")),
        rustix::fs::FileType::Fifo => return Err(not_regular("a FIFO")),
        _ => return Err(not_regular("a device or socket")),
    }
    // Reopen the very inode found for reading.
    let proc_path = format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&path_fd)
    );
    let fd = rustix::fs::open(
        proc_path.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io)?;
    Ok(fs_err::File::from_parts(std::fs::File::from(fd), shown))
}

/// Reads a small regular file (a manifest or an index) inside `dir`.
fn read_small(dir: &Path, rel: &Path) -> Result<Vec<u8>, ImageError> {
    let mut bytes = Vec::new();
    open(dir, rel)?
        .take(MAX_JSON + 1)
        .read_to_end(&mut bytes)
        .ctx(|| format!("read {}", dir.join(rel).display()))?;
    if bytes.len() as u64 > MAX_JSON {
        return Err(invalid(
            dir,
            format!("{} is larger than {} MiB", rel.display(), MAX_JSON >> 20),
        ));
    }
    Ok(bytes)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    layers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: Option<String>,
    digest: String,
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ImageManifest {
    layers: Vec<Descriptor>,
}

fn invalid(dir: &Path, reason: impl Into<String>) -> ImageError {
    ImageError::Import {
        path: dir.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(dir: &Path, rel: &Path) -> Result<T, ImageError> {
    let bytes = read_small(dir, rel)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| invalid(dir, format!("{} is not valid: {e}", rel.display())))
}

/// The layers of the image in `dir`, bottom first.
pub fn layers(dir: &Path, layout: Layout) -> Result<Vec<Layer>, ImageError> {
    match layout {
        Layout::DockerSave => docker_layers(dir),
        Layout::Oci => oci_layers(dir),
    }
}

fn docker_layers(dir: &Path) -> Result<Vec<Layer>, ImageError> {
    let manifests: Vec<DockerManifest> = read_json(dir, Path::new("manifest.json"))?;
    let first = match manifests.as_slice() {
        [one] => one,
        [] => return Err(invalid(dir, "manifest.json lists no image")),
        more => {
            return Err(invalid(
                dir,
                format!("the archive holds {} images; save just one", more.len()),
            ))
        }
    };
    first
        .layers
        .iter()
        .map(|l| {
            let rel = clean_relative(Path::new(l))
                .ok_or_else(|| invalid(dir, format!("layer path {l:?} leaves the archive")))?;
            // Newer docker names layers by digest (blobs/sha256/<hex>).
            let digest = l
                .strip_prefix("blobs/sha256/")
                .map(|hex| format!("sha256:{hex}"));
            Ok(Layer { path: rel, digest })
        })
        .collect()
}

fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf, ImageError> {
    let (alg, hex) = digest
        .split_once(':')
        .filter(|(a, h)| {
            *a == "sha256" && h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .ok_or_else(|| invalid(dir, format!("unsupported digest {digest:?}")))?;
    Ok(Path::new("blobs").join(alg).join(hex))
}

/// Reads a blob and checks it against its digest.
fn read_blob(dir: &Path, digest: &str) -> Result<Vec<u8>, ImageError> {
    let path = blob_path(dir, digest)?;
    let bytes = read_small(dir, &path)?;
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    if actual != digest {
        return Err(ImageError::DigestMismatch {
            what: dir.join(path).display().to_string(),
            expected: digest.to_string(),
            actual,
        });
    }
    Ok(bytes)
}

fn is_index(media_type: Option<&str>) -> bool {
    media_type.is_some_and(|m| m.contains("image.index") || m.contains("manifest.list"))
}

fn oci_layers(dir: &Path) -> Result<Vec<Layer>, ImageError> {
    let mut index: Index = read_json(dir, Path::new("index.json"))?;
    // Follow nested indexes (multi-platform images) down to one linux/amd64 manifest.
    for _ in 0..4 {
        let pick = pick_manifest(&index.manifests)
            .ok_or_else(|| invalid(dir, "index.json lists no linux/amd64 image"))?;
        let blob = read_blob(dir, &pick.digest)?;
        if is_index(pick.media_type.as_deref()) {
            index = serde_json::from_slice(&blob).map_err(|e| {
                invalid(
                    dir,
                    format!("image index {} is not valid: {e}", pick.digest),
                )
            })?;
            continue;
        }
        let manifest: ImageManifest = serde_json::from_slice(&blob)
            .map_err(|e| invalid(dir, format!("manifest {} is not valid: {e}", pick.digest)))?;
        return manifest
            .layers
            .iter()
            .map(|l| {
                Ok(Layer {
                    path: blob_path(dir, &l.digest)?,
                    digest: Some(l.digest.clone()),
                })
            })
            .collect();
    }
    Err(invalid(dir, "image indexes nest too deeply"))
}

fn pick_manifest(manifests: &[Descriptor]) -> Option<&Descriptor> {
    manifests
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
        .or_else(|| {
            // Single-platform layouts often omit the platform.
            (manifests.len() == 1).then(|| &manifests[0])
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn blob(dir: &Path, bytes: &[u8]) -> String {
        let hex = hex::encode(Sha256::digest(bytes));
        fs_err::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs_err::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
        format!("sha256:{hex}")
    }

    /// An OCI layout with two layers behind a multi-platform index.
    pub(crate) fn oci_dir(dir: &Path, layers: &[&[u8]]) -> Vec<String> {
        let digests: Vec<String> = layers.iter().map(|l| blob(dir, l)).collect();
        let layers_json: Vec<String> = digests
            .iter()
            .map(|d| format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":1}}"#))
            .collect();
        let manifest = format!(
            r#"{{"schemaVersion":2,"layers":[{}]}}"#,
            layers_json.join(",")
        );
        let m = blob(dir, manifest.as_bytes());
        let nested = format!(
            r#"{{"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{m}","platform":{{"architecture":"arm64","os":"linux"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{m}","platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        );
        let n = blob(dir, nested.as_bytes());
        fs_err::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        fs_err::write(
            dir.join("index.json"),
            format!(r#"{{"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{n}"}}]}}"#),
        )
        .unwrap();
        digests
    }

    #[test]
    fn oci_layout_layers_come_in_manifest_order() {
        let dir = tempfile::tempdir().unwrap();
        let digests = oci_dir(dir.path(), &[b"bottom", b"top"]);
        assert_eq!(detect(dir.path()).unwrap(), Some(Layout::Oci));
        let got = layers(dir.path(), Layout::Oci).unwrap();
        let got: Vec<_> = got.iter().map(|l| l.digest.clone().unwrap()).collect();
        assert_eq!(got, digests);
    }

    #[test]
    fn tampered_oci_manifest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        oci_dir(dir.path(), &[b"layer"]);
        for entry in fs_err::read_dir(dir.path().join("blobs/sha256")).unwrap() {
            let p = entry.unwrap().path();
            if fs_err::read_to_string(&p).is_ok_and(|t| t.contains("schemaVersion")) {
                fs_err::write(&p, r#"{"schemaVersion":2,"layers":[]}"#).unwrap();
            }
        }
        let err = layers(dir.path(), Layout::Oci).unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    }

    #[test]
    fn docker_save_layers_come_in_manifest_order() {
        let dir = tempfile::tempdir().unwrap();
        fs_err::write(
            dir.path().join("manifest.json"),
            r#"[{"Config":"c.json","RepoTags":["x:1"],"Layers":["a/layer.tar","blobs/sha256/abcd"]}]"#,
        )
        .unwrap();
        assert_eq!(detect(dir.path()).unwrap(), Some(Layout::DockerSave));
        let got = layers(dir.path(), Layout::DockerSave).unwrap();
        assert_eq!(got[0].path, Path::new("a/layer.tar"));
        assert_eq!(got[1].digest.as_deref(), Some("sha256:abcd"));
    }

    #[test]
    fn docker_layer_path_escaping_the_archive_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs_err::write(
            dir.path().join("manifest.json"),
            r#"[{"Layers":["../../etc/shadow"]}]"#,
        )
        .unwrap();
        let err = layers(dir.path(), Layout::DockerSave).unwrap_err();
        assert!(err.to_string().contains("leaves the archive"), "{err}");
    }

    #[test]
    fn manifest_symlinked_out_of_the_archive_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let host = outside.path().join("m.json");
        fs_err::write(&host, r#"[{"Layers":["a/layer.tar"]}]"#).unwrap();
        std::os::unix::fs::symlink(&host, dir.path().join("manifest.json")).unwrap();

        let err = detect(dir.path()).unwrap_err();

        assert_eq!(
            err.to_string(),
            format!(
                "manifest.json in {} is a symbolic link, not a regular file",
                dir.path().display()
            )
        );
    }

    #[test]
    fn manifest_linked_to_a_device_is_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("manifest.json")).unwrap();
        let err = detect(dir.path()).unwrap_err();
        assert!(matches!(err, ImageError::NotRegular { .. }), "{err}");
    }

    #[test]
    fn fifo_index_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        oci_dir(dir.path(), &[b"layer"]);
        fs_err::remove_file(dir.path().join("index.json")).unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("index.json"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();

        let err = detect(dir.path()).unwrap_err();

        assert!(
            matches!(err, ImageError::NotRegular { kind: "a FIFO", .. }),
            "{err}"
        );
    }

    #[test]
    fn blob_behind_a_symlinked_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        oci_dir(elsewhere.path(), &[b"layer"]);
        fs_err::copy(
            elsewhere.path().join("index.json"),
            dir.path().join("index.json"),
        )
        .unwrap();
        fs_err::copy(
            elsewhere.path().join("oci-layout"),
            dir.path().join("oci-layout"),
        )
        .unwrap();
        std::os::unix::fs::symlink(elsewhere.path().join("blobs"), dir.path().join("blobs"))
            .unwrap();

        let err = layers(dir.path(), Layout::Oci).unwrap_err();

        assert!(matches!(err, ImageError::NotRegular { .. }), "{err}");
    }
}
