//! Single Debian packages (the kernel, busybox-static) fetched outside debootstrap.
//!
//! Trust comes from debootstrap: it verified the suite's `Release` signature and the
//! `Packages` index it left in the tree. A package is looked up in that index and its
//! `.deb` is checked against the index's SHA256 before use.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::cmd;
use super::error::{ImageError, IoContext};

/// Bytes between two download progress reports.
const PROGRESS_STEP: u64 = 1 << 20;

/// One package of a `Packages` index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebEntry {
    pub package: String,
    pub version: String,
    /// Path under the mirror root (`pool/main/...`).
    pub filename: String,
    pub sha256: String,
    pub size: u64,
    pub depends: String,
}

impl DebEntry {
    /// The first package named in `Depends` (first alternative), without version.
    pub fn first_dependency(&self) -> Option<&str> {
        let first = self.depends.split([',', '|']).next()?.trim();
        let name = first.split([' ', '(', ':']).next()?;
        (!name.is_empty()).then_some(name)
    }

    fn file_name(&self) -> &str {
        self.filename.rsplit('/').next().unwrap_or(&self.filename)
    }
}

/// Finds `names` in the `*_Packages` files of an apt lists directory. Missing names are
/// absent from the map.
pub fn lookup(lists: &Path, names: &[&str]) -> Result<BTreeMap<String, DebEntry>, ImageError> {
    let mut files: Vec<PathBuf> = fs_err::read_dir(lists)
        .ctx(|| "read the package index".into())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with("_Packages"))
        .collect();
    files.sort();
    let mut found = BTreeMap::new();
    for file in files {
        let f = fs_err::File::open(&file).ctx(|| "read the package index".into())?;
        parse_index(BufReader::new(f), names, &mut found)
            .ctx(|| format!("read {}", file.display()))?;
    }
    Ok(found)
}

/// [`lookup`] of one package, as an error when it is missing.
pub fn lookup_one(lists: &Path, name: &str) -> Result<DebEntry, ImageError> {
    lookup(lists, &[name])?
        .remove(name)
        .ok_or_else(|| ImageError::PackageMissing {
            package: name.to_string(),
            lists: lists.to_path_buf(),
        })
}

/// Reads RFC 822 stanzas, keeping the first complete stanza of each wanted package.
pub fn parse_index<R: BufRead>(
    r: R,
    names: &[&str],
    found: &mut BTreeMap<String, DebEntry>,
) -> std::io::Result<()> {
    let mut current: Option<BTreeMap<&'static str, String>> = None;
    for line in r.lines() {
        let line = line?;
        if line.is_empty() {
            finish_stanza(current.take(), found);
            continue;
        }
        if let Some(pkg) = line.strip_prefix("Package: ") {
            finish_stanza(current.take(), found);
            let pkg = pkg.trim();
            if names.contains(&pkg) && !found.contains_key(pkg) {
                let mut m = BTreeMap::new();
                m.insert("Package", pkg.to_string());
                current = Some(m);
            }
            continue;
        }
        let Some(fields) = current.as_mut() else {
            continue;
        };
        for key in ["Version", "Filename", "SHA256", "Size", "Depends"] {
            if let Some(v) = line.strip_prefix(key).and_then(|r| r.strip_prefix(": ")) {
                fields.insert(key, v.trim().to_string());
            }
        }
    }
    finish_stanza(current.take(), found);
    Ok(())
}

fn finish_stanza(
    stanza: Option<BTreeMap<&'static str, String>>,
    found: &mut BTreeMap<String, DebEntry>,
) {
    let Some(mut f) = stanza else { return };
    let mut take = |k| f.remove(k).unwrap_or_default();
    let entry = DebEntry {
        package: take("Package"),
        version: take("Version"),
        filename: take("Filename"),
        sha256: take("SHA256"),
        size: take("Size").parse().unwrap_or(0),
        depends: take("Depends"),
    };
    if !entry.filename.is_empty() && entry.sha256.len() == 64 {
        found.entry(entry.package.clone()).or_insert(entry);
    }
}

/// Hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, ImageError> {
    let mut f = fs_err::File::open(path).ctx(|| "hash a file".into())?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .ctx(|| format!("read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Returns the `.deb` for `entry` from `cache`, downloading it from `mirror` first when
/// it is missing or does not match the index. `progress(done, total)` follows bytes.
pub fn fetch(
    mirror: &str,
    entry: &DebEntry,
    cache: &Path,
    progress: &dyn Fn(u64, u64),
) -> Result<PathBuf, ImageError> {
    let dest = cache.join(entry.file_name());
    if dest.exists() && sha256_file(&dest)? == entry.sha256 {
        progress(entry.size, entry.size);
        return Ok(dest);
    }
    fs_err::create_dir_all(cache).ctx(|| "create the package cache".into())?;
    let url = format!("{}/{}", mirror.trim_end_matches('/'), entry.filename);
    let part = cache.join(format!("{}.part-{}", entry.file_name(), std::process::id()));
    let result = download(&url, &part, entry.size, progress).and_then(|actual| {
        if actual == entry.sha256 {
            fs_err::rename(&part, &dest).ctx(|| "store a downloaded package".into())
        } else {
            Err(ImageError::DigestMismatch {
                what: url.clone(),
                expected: entry.sha256.clone(),
                actual,
            })
        }
    });
    if result.is_err() {
        // Best effort: a leftover part file is overwritten by the next attempt.
        let _ = fs_err::remove_file(&part);
    }
    result.map(|()| dest)
}

/// Copies `url` (http, https, `file:` or a plain path) to `dest`; returns its sha256.
pub fn download(
    url: &str,
    dest: &Path,
    total: u64,
    progress: &dyn Fn(u64, u64),
) -> Result<String, ImageError> {
    let mut reader = open_url(url)?;
    let mut out = std::io::BufWriter::new(
        fs_err::File::create(dest).ctx(|| "create a download file".into())?,
    );
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut done = 0u64;
    let mut reported = 0u64;
    loop {
        let n = reader.read(&mut buf).ctx(|| format!("download {url}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .ctx(|| format!("write {}", dest.display()))?;
        done += n as u64;
        if done - reported >= PROGRESS_STEP {
            progress(done, total.max(done));
            reported = done;
        }
    }
    progress(done, total.max(done));
    out.flush().ctx(|| format!("write {}", dest.display()))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Opens `url` (http, https, `file:` or a plain path) for reading. Non-2xx answers
/// are errors.
pub fn open_url(url: &str) -> Result<Box<dyn Read>, ImageError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build()
            .into();
        let resp = agent
            .get(url)
            .call()
            .map_err(|source| ImageError::Download {
                url: url.to_string(),
                source: Box::new(source),
            })?;
        Ok(Box::new(resp.into_body().into_reader()))
    } else {
        let path = url.strip_prefix("file://").unwrap_or(url);
        Ok(Box::new(
            fs_err::File::open(path).ctx(|| format!("read {url}"))?,
        ))
    }
}

/// Unpacks a `.deb`'s files into `dest` with `dpkg-deb`, or with `ar` and `tar` on hosts
/// without dpkg (debootstrap itself needs one of the two).
pub fn extract(deb: &Path, dest: &Path) -> Result<(), ImageError> {
    fs_err::create_dir_all(dest).ctx(|| "create an unpack directory".into())?;
    if let Ok(dpkg_deb) = cmd::tool("dpkg-deb", "dpkg") {
        cmd::run(Command::new(dpkg_deb).arg("-x").arg(deb).arg(dest))?;
        return Ok(());
    }
    let ar = cmd::tool("ar", "binutils")?;
    let tar = cmd::tool("tar", "tar")?;
    let members = cmd::run(Command::new(&ar).arg("t").arg(deb))?;
    let data = String::from_utf8_lossy(&members)
        .lines()
        .find(|m| m.starts_with("data.tar"))
        .map(str::to_string)
        .ok_or_else(|| ImageError::Command {
            program: "ar".into(),
            status: "no data member".into(),
            detail: format!("{} has no data.tar.* member", deb.display()),
        })?;
    cmd::run(
        Command::new(&ar)
            .arg("x")
            .arg(deb)
            .arg(&data)
            .current_dir(dest),
    )?;
    let archive = dest.join(&data);
    cmd::run(
        Command::new(tar)
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(dest),
    )?;
    fs_err::remove_file(&archive).ctx(|| "remove an unpacked archive".into())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = "\
Package: linux-image-cloud-amd64
Version: 6.1.176-1
Depends: linux-image-6.1.0-50-cloud-amd64 (= 6.1.176-1)
Filename: pool/main/l/linux-signed-amd64/linux-image-cloud-amd64_6.1.176-1_amd64.deb
Size: 1500
SHA256: 6f32a25a6ee7b58852de01577ba261fda873c3002c736a2148bf0a6593bd93c8

Package: busybox-static
Version: 1:1.35.0-4+b3
Description: a long
 multi-line description
Filename: pool/main/b/busybox/busybox-static_1.35.0-4+b3_amd64.deb
Size: 900000
SHA256: 1111111111111111111111111111111111111111111111111111111111111111
";

    fn parse(names: &[&str]) -> BTreeMap<String, DebEntry> {
        let mut found = BTreeMap::new();
        parse_index(INDEX.as_bytes(), names, &mut found).unwrap();
        found
    }

    #[test]
    fn wanted_packages_are_found_with_their_fields() {
        let found = parse(&["busybox-static", "linux-image-cloud-amd64", "nope"]);
        assert_eq!(found.len(), 2);
        let bb = &found["busybox-static"];
        assert_eq!(bb.version, "1:1.35.0-4+b3");
        assert_eq!(bb.size, 900000);
        assert_eq!(bb.file_name(), "busybox-static_1.35.0-4+b3_amd64.deb");
    }

    #[test]
    fn meta_package_names_its_kernel() {
        let meta = &parse(&["linux-image-cloud-amd64"])["linux-image-cloud-amd64"];
        assert_eq!(
            meta.first_dependency(),
            Some("linux-image-6.1.0-50-cloud-amd64")
        );
    }

    #[test]
    fn cached_deb_with_wrong_digest_is_fetched_again_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = dir.path().join("mirror");
        fs_err::create_dir_all(mirror.join("pool")).unwrap();
        fs_err::write(mirror.join("pool/x_1_amd64.deb"), b"real").unwrap();
        let cache = dir.path().join("cache");
        fs_err::create_dir_all(&cache).unwrap();
        fs_err::write(cache.join("x_1_amd64.deb"), b"stale").unwrap();
        let entry = DebEntry {
            package: "x".into(),
            version: "1".into(),
            filename: "pool/x_1_amd64.deb".into(),
            sha256: hex::encode(Sha256::digest(b"real")),
            size: 4,
            depends: String::new(),
        };
        let got = fetch(mirror.to_str().unwrap(), &entry, &cache, &|_, _| {}).unwrap();
        assert_eq!(fs_err::read(got).unwrap(), b"real");
    }

    #[test]
    fn download_with_wrong_digest_is_refused_and_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        fs_err::write(dir.path().join("x.deb"), b"tampered").unwrap();
        let entry = DebEntry {
            package: "x".into(),
            version: "1".into(),
            filename: "x.deb".into(),
            sha256: hex::encode(Sha256::digest(b"real")),
            size: 4,
            depends: String::new(),
        };
        let cache = dir.path().join("cache");
        let err = fetch(dir.path().to_str().unwrap(), &entry, &cache, &|_, _| {}).unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert_eq!(fs_err::read_dir(&cache).unwrap().count(), 0);
    }
}
