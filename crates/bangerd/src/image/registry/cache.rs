//! The layer cache: registry layers as downloaded (compressed), by digest, under
//! `<cache>/layers/sha256/<hex>`, so images that share a base download it once.
//!
//! A download goes to `tmp/` and is renamed into place only once its size and digest
//! match the manifest, so the cache holds only verified blobs. Pulls hold a shared lock
//! on `.lock` and prune an exclusive one: prune never removes a layer a pull has just
//! fetched but not yet made into an image.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::image::error::{ImageError, IoContext};

/// A checked `sha256:<64 hex>` digest: the only form that names a cache file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest(String);

impl Digest {
    /// Refuses anything but `sha256:` and 64 lowercase hex digits (the digest comes
    /// from the registry and becomes a file name).
    pub fn parse(s: &str) -> Option<Digest> {
        let hex = s.strip_prefix("sha256:")?;
        let ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| Digest(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The first 12 hex digits, as `docker pull` shows a layer.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }
}

/// The layer cache under a cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(cache_dir: &Path) -> Cache {
        Cache {
            dir: cache_dir.join("layers"),
        }
    }

    /// The directory layers are opened relative to (see [`Cache::rel`]).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A layer's path relative to [`Cache::dir`].
    pub fn rel(digest: &Digest) -> PathBuf {
        Path::new("sha256").join(digest.hex())
    }

    pub fn has(&self, digest: &Digest) -> bool {
        fs_err::symlink_metadata(self.dir.join(Cache::rel(digest))).is_ok_and(|m| m.is_file())
    }

    fn lock(&self, arg: FlockArg) -> Result<Option<Flock<std::fs::File>>, ImageError> {
        fs_err::create_dir_all(self.dir.join("sha256")).ctx(|| "create the layer cache".into())?;
        fs_err::create_dir_all(self.dir.join("tmp")).ctx(|| "create the layer cache".into())?;
        let path = self.dir.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx(|| format!("open {}", path.display()))?;
        match Flock::lock(file, arg) {
            Ok(lock) => Ok(Some(lock)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(ImageError::Io {
                action: format!("lock {}", path.display()),
                source: e.into(),
            }),
        }
    }

    /// Held by a pull from its first download until its image is made.
    pub fn shared(&self) -> Result<Flock<std::fs::File>, ImageError> {
        self.lock(FlockArg::LockShared)?
            .ok_or_else(|| ImageError::Io {
                action: "lock the layer cache".into(),
                source: std::io::Error::other("lock refused"),
            })
    }

    /// A new download's temporary file, removed when dropped unless kept.
    pub fn partial(&self, digest: &Digest) -> Partial {
        Partial {
            path: self.dir.join("tmp").join(format!(
                "{}.{}.{}",
                digest.hex(),
                std::process::id(),
                rand::random::<u32>()
            )),
            target: self.dir.join(Cache::rel(digest)),
        }
    }

    /// Removes the layers none of `used` names, and every temporary download; `None`
    /// when a pull holds the cache (nothing is removed then). With `dry_run` only lists.
    pub fn prune(
        &self,
        used: &HashSet<String>,
        dry_run: bool,
    ) -> Result<Option<Vec<String>>, ImageError> {
        if !self.dir.exists() {
            return Ok(Some(Vec::new()));
        }
        let Some(_lock) = self.lock(FlockArg::LockExclusiveNonblock)? else {
            return Ok(None);
        };
        let mut gone = Vec::new();
        let blobs = self.dir.join("sha256");
        for entry in fs_err::read_dir(&blobs).ctx(|| "list the layer cache".into())? {
            let entry = entry.ctx(|| "list the layer cache".into())?;
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
            if used.contains(&digest) {
                continue;
            }
            if !dry_run {
                fs_err::remove_file(entry.path()).ctx(|| "remove a cached layer".into())?;
            }
            gone.push(digest);
        }
        if !dry_run {
            for entry in
                fs_err::read_dir(self.dir.join("tmp")).ctx(|| "list the layer cache".into())?
            {
                let entry = entry.ctx(|| "list the layer cache".into())?;
                fs_err::remove_file(entry.path()).ctx(|| "remove a partial layer".into())?;
            }
        }
        gone.sort();
        Ok(Some(gone))
    }
}

/// A layer being downloaded; it enters the cache only through [`Partial::keep`].
pub struct Partial {
    path: PathBuf,
    target: PathBuf,
}

impl Partial {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the verified download into the cache.
    pub fn keep(self) -> Result<(), ImageError> {
        fs_err::rename(&self.path, &self.target).ctx(|| "store a layer in the cache".into())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        // After keep() the file is gone and this fails quietly.
        let _ = fs_err::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sha256_hex_digests_name_files() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(Digest::parse(&good).unwrap().short(), "aaaaaaaaaaaa");
        assert!(Digest::parse(&format!("sha256:../../{}", "a".repeat(58))).is_none());
        assert!(Digest::parse(&format!("sha512:{}", "a".repeat(64))).is_none());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_none());
        assert!(Digest::parse("sha256:abc").is_none());
    }

    #[test]
    fn prune_keeps_used_layers_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let (a, b) = (
            Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap(),
            Digest::parse(&format!("sha256:{}", "b".repeat(64))).unwrap(),
        );
        let lock = cache.shared().unwrap();
        for d in [&a, &b] {
            let p = cache.partial(d);
            fs_err::write(p.path(), "layer").unwrap();
            p.keep().unwrap();
        }
        let used: HashSet<String> = [a.as_str().to_string()].into();

        assert_eq!(cache.prune(&used, false).unwrap(), None, "a pull holds it");
        drop(lock);
        let gone = cache.prune(&used, false).unwrap().unwrap();

        assert_eq!(gone, vec![b.as_str().to_string()]);
        assert!(cache.has(&a) && !cache.has(&b));
    }
}
