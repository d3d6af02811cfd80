//! `manifest.json`: what an image is made of (digest of every file) and where it came
//! from (the build inputs, the import path or the pull URL).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use banger_wire::api::ImageRunConfig;
use banger_wire::bundle::FILES;
use banger_wire::user::GuestUser;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::{ImageError, IoContext};

/// Version of the manifest layout.
pub const FORMAT: u32 = 1;
/// Version of the build recipe; bumping it makes every built image out of date.
pub const RECIPE: u32 = 1;

/// Size and content digest of one image file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub sha256: String,
    pub bytes: u64,
}

/// What `image build` was asked for, after defaults; equal inputs give an equal image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInputs {
    pub suite: String,
    pub mirror: String,
    /// Every package asked of debootstrap, sorted.
    pub packages: Vec<String>,
    pub size_mib: u64,
    pub agent_sha256: String,
    pub recipe: u32,
    /// sha256 of the initramfs `/init`, so a changed boot path rebuilds.
    pub init_sha256: String,
    /// The user created in the image (`--user`); absent ones leave earlier digests be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<GuestUser>,
    /// Whether `user` has passwordless sudo.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sudo: bool,
}

impl BuildInputs {
    /// `sha256:<hex>` of the canonical JSON of the inputs.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("sha256:{}", hex::encode(Sha256::digest(json)))
    }
}

/// Where an image came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    Build {
        inputs: BuildInputs,
    },
    Import {
        path: String,
        agent_sha256: String,
    },
    Pull {
        url: String,
    },
    /// `image pull REF` from an OCI registry: the linux/amd64 manifest and its layers.
    Registry {
        reference: String,
        manifest_digest: String,
        /// Compressed layer digests, bottom first: the layer cache entries it used.
        layers: Vec<String>,
        agent_sha256: String,
    },
}

/// The kernel package and busybox the boot files came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootInfo {
    pub kernel_package: String,
    pub kernel_version: String,
    pub kernel_deb_sha256: String,
    pub busybox_version: String,
    /// Modules in the initramfs, in load order.
    pub modules: Vec<String>,
}

/// The contents of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
    pub origin: Origin,
    /// For a build, [`BuildInputs::digest`]; otherwise a digest of the source.
    pub inputs_digest: String,
    pub boot: BootInfo,
    pub files: BTreeMap<String, FileDigest>,
    /// A container image's entrypoint, cmd, env and working directory.
    #[serde(default, skip_serializing_if = "is_default")]
    pub run: ImageRunConfig,
    /// What the root file system lacks (see [`ImageInfo::lacks`]).
    ///
    /// [`ImageInfo::lacks`]: banger_wire::api::ImageInfo::lacks
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lacks: Vec<String>,
}

fn is_default(run: &ImageRunConfig) -> bool {
    *run == ImageRunConfig::default()
}

impl Manifest {
    /// `build:<suite>`, `import:<path>` or `pull:<url>`.
    pub fn source(&self) -> String {
        match &self.origin {
            Origin::Build { inputs } => format!("build:{}", inputs.suite),
            Origin::Import { path, .. } => format!("import:{path}"),
            Origin::Pull { url } => format!("pull:{url}"),
            Origin::Registry {
                reference,
                manifest_digest,
                ..
            } => format!("registry:{reference}@{manifest_digest}"),
        }
    }

    /// The layer cache entries a registry pull made the image from.
    pub fn layers(&self) -> &[String] {
        match &self.origin {
            Origin::Registry { layers, .. } => layers,
            _ => &[],
        }
    }

    /// Reads a manifest and returns it with the sha256 of its bytes.
    pub fn read(path: &Path) -> Result<(Manifest, String), ImageError> {
        let bytes = fs_err::read(path).ctx(|| "read an image manifest".into())?;
        let manifest = serde_json::from_slice(&bytes).map_err(|source| ImageError::Manifest {
            path: path.to_path_buf(),
            source,
        })?;
        Ok((
            manifest,
            format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
        ))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    pub fn write(&self, path: &Path) -> Result<(), ImageError> {
        fs_err::write(path, self.to_bytes()).ctx(|| "write the image manifest".into())
    }

    /// Quick check that every listed file is present with its recorded size.
    pub fn check_sizes(&self, dir: &Path) -> Result<(), String> {
        for name in FILES {
            let want = self
                .files
                .get(name)
                .ok_or_else(|| format!("the manifest lists no {name}"))?;
            let got = fs_err::metadata(dir.join(name))
                .map_err(|e| format!("{name}: {e}"))?
                .len();
            if got != want.bytes {
                return Err(format!("{name} has {got} bytes, expected {}", want.bytes));
            }
        }
        Ok(())
    }

    /// Full check: every listed file hashes to its recorded digest.
    pub fn verify(&self, dir: &Path, progress: &dyn Fn(u64, u64)) -> Result<(), ImageError> {
        self.check_sizes(dir)
            .map_err(|reason| ImageError::Corrupt {
                name: self.name.clone(),
                reason,
            })?;
        let actual = digest_files(dir, progress)?;
        for name in FILES {
            let (want, got) = (&self.files[name], &actual[name]);
            if want.sha256 != got.sha256 {
                return Err(ImageError::DigestMismatch {
                    what: dir.join(name).display().to_string(),
                    expected: want.sha256.clone(),
                    actual: got.sha256.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Hashes the image files in `dir`; `progress(done, total)` follows bytes.
pub fn digest_files(
    dir: &Path,
    progress: &dyn Fn(u64, u64),
) -> Result<BTreeMap<String, FileDigest>, ImageError> {
    let mut total = 0;
    for name in FILES {
        total += fs_err::metadata(dir.join(name))
            .ctx(|| format!("hash {name}"))?
            .len();
    }
    let mut done = 0;
    let mut out = BTreeMap::new();
    let mut buf = vec![0u8; 1 << 20];
    for name in FILES {
        let path = dir.join(name);
        let mut f = fs_err::File::open(&path).ctx(|| format!("hash {name}"))?;
        let mut h = Sha256::new();
        let mut bytes = 0u64;
        loop {
            let n = f.read(&mut buf).ctx(|| format!("hash {name}"))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            bytes += n as u64;
            done += n as u64;
            if done % (64 << 20) < n as u64 {
                progress(done, total);
            }
        }
        let sha256 = hex::encode(h.finalize());
        out.insert(name.to_string(), FileDigest { sha256, bytes });
    }
    progress(total, total);
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use banger_wire::bundle::{INITRD, MANIFEST, ROOTFS};

    pub(crate) fn inputs() -> BuildInputs {
        BuildInputs {
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
            packages: vec!["git".into(), "openssh-server".into()],
            size_mib: 4096,
            agent_sha256: "aa".into(),
            recipe: RECIPE,
            init_sha256: "bb".into(),
            user: None,
            sudo: false,
        }
    }

    /// An image directory with small files and a matching manifest.
    pub(crate) fn image_dir(dir: &Path, name: &str, inputs: BuildInputs) -> Manifest {
        for f in FILES {
            fs_err::write(dir.join(f), format!("{f} of {name}")).unwrap();
        }
        let manifest = Manifest {
            format: FORMAT,
            name: name.into(),
            created_at: "2026-11-24T00:00:00Z".into(),
            inputs_digest: inputs.digest(),
            origin: Origin::Build { inputs },
            boot: BootInfo {
                kernel_package: "linux-image-6.1.0-50-cloud-amd64".into(),
                kernel_version: "6.1.176-1".into(),
                kernel_deb_sha256: "cc".into(),
                busybox_version: "1:1.35.0-4".into(),
                modules: vec!["virtio".into()],
            },
            files: digest_files(dir, &|_, _| {}).unwrap(),
            run: Default::default(),
            lacks: Vec::new(),
        };
        manifest.write(&dir.join(MANIFEST)).unwrap();
        manifest
    }

    #[test]
    fn inputs_digest_changes_with_any_input() {
        let base = inputs().digest();
        assert_eq!(base, inputs().digest());
        assert!(base.starts_with("sha256:"));
        let mut other = inputs();
        other.packages.push("vim".into());
        assert_ne!(other.digest(), base);
        let mut other = inputs();
        other.agent_sha256 = "ab".into();
        assert_ne!(other.digest(), base);
    }

    #[test]
    fn manifest_round_trips_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let written = image_dir(dir.path(), "default", inputs());
        let (read, digest) = Manifest::read(&dir.path().join(MANIFEST)).unwrap();
        assert_eq!(read, written);
        assert!(digest.starts_with("sha256:"));
        assert_eq!(read.source(), "build:bookworm");
        read.verify(dir.path(), &|_, _| {}).unwrap();
    }

    #[test]
    fn tampered_file_fails_verification() {
        let dir = tempfile::tempdir().unwrap();
        let m = image_dir(dir.path(), "default", inputs());
        fs_err::write(dir.path().join(INITRD), "initrd.img of DEFAULT").unwrap();
        let err = m.verify(dir.path(), &|_, _| {}).unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    }

    #[test]
    fn truncated_file_fails_the_size_check() {
        let dir = tempfile::tempdir().unwrap();
        let m = image_dir(dir.path(), "default", inputs());
        fs_err::write(dir.path().join(ROOTFS), "x").unwrap();
        let err = m.check_sizes(dir.path()).unwrap_err();
        assert!(err.starts_with("rootfs.ext4 has 1 bytes"), "{err}");
    }
}
