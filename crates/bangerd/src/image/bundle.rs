//! Image bundles: how images are published and pulled.
//!
//! A bundle is a directory (served over HTTP or on disk) holding the image's
//! `manifest.json` and each image file gzip-compressed as `<file>.gz`. The manifest's
//! digests and sizes are those of the uncompressed files; a pull checks every byte
//! against them before the image appears in the store. gzip keeps the sparse 4 GiB root
//! file system small in transit, and the pull writes it back sparse. A pull reads no
//! more of a file than the manifest declares, and refuses a bundle whose files add up
//! to more than the configured import limit.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use banger_host::config::{Limits, Paths};
use banger_wire::bundle;
use sha2::{Digest, Sha256};

use super::build::now_rfc3339;
use super::error::{ImageError, IoContext};
use super::manifest::{Manifest, Origin, FORMAT};
use super::name::validate_name;
use super::packages::open_url;
use super::store::{self, Image, Staging};
use super::{Progress, ProgressFn};

/// Largest manifest a pull accepts.
const MAX_MANIFEST: u64 = 1 << 20;
/// Chunk written, or skipped as a hole when all zero.
const CHUNK: usize = 64 * 1024;

/// Writes an image file gzip-compressed into `out`, as the bundle's `<file>.gz`. The
/// CLI asks for each file of an export ([`bundle::FILES`], then the manifest as is) and
/// writes the bundle itself, as the user.
pub fn compress(mut src: impl Read, out: impl Write) -> std::io::Result<()> {
    let mut gz = flate2::write::GzEncoder::new(
        std::io::BufWriter::with_capacity(CHUNK, out),
        flate2::Compression::fast(),
    );
    std::io::copy(&mut src, &mut gz)?;
    gz.finish()?.flush()
}

/// `http://h/x/` or `http://h/x/manifest.json` -> `http://h/x/`
fn base_url(url: &str) -> String {
    let base = url.strip_suffix(bundle::MANIFEST).unwrap_or(url);
    if base.ends_with('/') {
        base.to_string()
    } else {
        format!("{base}/")
    }
}

/// Fetches the bundle at `url` as image `name` (the bundle's own name when absent),
/// verifying every file; its files may add up to `limits.max_bytes`. Blocking; run it
/// on a blocking thread.
pub fn pull(
    paths: &Paths,
    url: &str,
    name: Option<&str>,
    limits: Limits,
    progress: ProgressFn<'_>,
) -> Result<Image, ImageError> {
    let base = base_url(url);
    let bundle_err = |reason: String| ImageError::Bundle {
        url: url.to_string(),
        reason,
    };
    let manifest_url = format!("{base}{}", bundle::MANIFEST);
    let mut bytes = Vec::new();
    open_url(&manifest_url)?
        .take(MAX_MANIFEST)
        .read_to_end(&mut bytes)
        .ctx(|| format!("download {manifest_url}"))?;
    let remote: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| bundle_err(format!("manifest.json is not valid: {e}")))?;
    if remote.format != FORMAT {
        return Err(bundle_err(format!(
            "manifest format {} is not supported (expected {FORMAT})",
            remote.format
        )));
    }
    let total = remote
        .files
        .values()
        .fold(0u64, |sum, f| sum.saturating_add(f.bytes));
    if total > limits.max_bytes {
        return Err(ImageError::TooLarge {
            what: format!("bundle {url} ({} MiB)", total >> 20),
            limit: format!("{} MiB", limits.max_bytes >> 20),
            setting: "import_max_mib",
        });
    }
    let name = name.unwrap_or(&remote.name).to_string();
    validate_name(&name)?;
    let images = paths.images_dir();
    let _lock = store::lock(&images, &name)?;
    if images.join(&name).exists() {
        return Err(ImageError::AlreadyExists { name });
    }
    let staging = Staging::new(&images, &name)?;
    let mut done = 0;
    for file in bundle::FILES {
        let want = remote
            .files
            .get(file)
            .ok_or_else(|| bundle_err(format!("manifest.json lists no {file}")))?;
        let file_url = format!("{base}{file}.gz");
        // One byte past the declared size is enough to know the server sends too much.
        let reader =
            flate2::read::GzDecoder::new(open_url(&file_url)?).take(want.bytes.saturating_add(1));
        let dest = staging.path().join(file);
        let (sha256, bytes) = write_sparse(reader, &dest, &mut |n| {
            done += n;
            progress(Progress::bytes("pull", done, total, file));
        })
        .ctx(|| format!("download {file_url}"))?;
        if bytes > want.bytes {
            return Err(bundle_err(format!(
                "{file}.gz holds more than the {} bytes manifest.json declares",
                want.bytes
            )));
        }
        if bytes != want.bytes || sha256 != want.sha256 {
            return Err(ImageError::DigestMismatch {
                what: file_url,
                expected: format!("{} ({} bytes)", want.sha256, want.bytes),
                actual: format!("{sha256} ({bytes} bytes)"),
            });
        }
    }
    let local = Manifest {
        name: name.clone(),
        created_at: now_rfc3339(),
        origin: Origin::Pull {
            url: url.to_string(),
        },
        inputs_digest: format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
        ..remote
    };
    local.write(&staging.path().join(bundle::MANIFEST))?;
    let target = images.join(&name);
    staging.commit(&target)?;
    tracing::info!(image = %name, url, "image pulled");
    Image::open(&target)
}

/// Copies `r` into a new file at `dest`, leaving all-zero chunks as holes. Returns the
/// sha256 and length of everything read. `on_bytes` is told of progress every 64 MiB.
fn write_sparse(
    mut r: impl Read,
    dest: &Path,
    on_bytes: &mut dyn FnMut(u64),
) -> std::io::Result<(String, u64)> {
    let mut out = fs_err::File::create(dest)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let (mut len, mut unreported) = (0u64, 0u64);
    loop {
        let mut filled = 0;
        while filled < CHUNK {
            match r.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            break;
        }
        let chunk = &buf[..filled];
        hasher.update(chunk);
        if chunk.iter().all(|&b| b == 0) {
            out.seek(SeekFrom::Current(filled as i64))?;
        } else {
            out.write_all(chunk)?;
        }
        len += filled as u64;
        unreported += filled as u64;
        if unreported >= 64 << 20 {
            on_bytes(unreported);
            unreported = 0;
        }
    }
    on_bytes(unreported);
    out.set_len(len)?;
    out.sync_all()?;
    Ok((hex::encode(hasher.finalize()), len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::manifest::{
        self,
        tests::{image_dir, inputs},
    };
    use banger_wire::Diagnostic;
    use std::io::BufRead;

    /// Writes `image` as a bundle into `out`, as the CLI does from the daemon's answers.
    fn export(image: &Image, out: &Path) {
        fs_err::create_dir_all(out).unwrap();
        for name in bundle::FILES {
            let src = std::fs::File::open(image.dir().join(name)).unwrap();
            let dst = std::fs::File::create(out.join(format!("{name}.gz"))).unwrap();
            compress(src, dst).unwrap();
        }
        let m = bundle::MANIFEST;
        fs_err::copy(image.dir().join(m), out.join(m)).unwrap();
    }

    /// Serves files of `dir` over HTTP/1.0 on 127.0.0.1 until the test ends.
    fn serve(dir: &Path) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let dir = dir.to_path_buf();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut line = String::new();
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                reader.read_line(&mut line).unwrap();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap() <= 2 {
                        break;
                    }
                }
                let path = line
                    .split(' ')
                    .nth(1)
                    .unwrap_or("/")
                    .trim_start_matches('/');
                let reply = match fs_err::read(dir.join(path)) {
                    Ok(body) => {
                        let head =
                            format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                        [head.into_bytes(), body].concat()
                    }
                    Err(_) => b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
                };
                let _ = stream.write_all(&reply);
            }
        });
        format!("http://{addr}/")
    }

    /// A store with one image, and that image exported as a bundle.
    fn published() -> (tempfile::TempDir, Paths, std::path::PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let src = root.path().join("src/default");
        fs_err::create_dir_all(&src).unwrap();
        // A rootfs with a large hole, to check it stays sparse.
        let mut m = image_dir(&src, "default", inputs());
        std::fs::OpenOptions::new()
            .write(true)
            .open(src.join(bundle::ROOTFS))
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        m.files = manifest::digest_files(&src, &|_, _| {}).unwrap();
        m.write(&src.join(bundle::MANIFEST)).unwrap();
        let bundle = root.path().join("bundle");
        export(&Image::open(&src).unwrap(), &bundle);
        let paths = Paths::under(&root.path().join("store"));
        (root, paths, bundle)
    }

    #[test]
    fn pulled_bundle_is_verified_sparse_and_listed() {
        let (_root, paths, bundle) = published();
        let url = serve(&bundle);

        let image = pull(
            &paths,
            &format!("{url}manifest.json"),
            Some("pulled"),
            Limits::default(),
            &|_| {},
        )
        .unwrap();

        assert_eq!(image.name(), "pulled");
        assert_eq!(image.info().source, format!("pull:{url}manifest.json"));
        image.manifest().verify(image.dir(), &|_, _| {}).unwrap();
        use std::os::unix::fs::MetadataExt;
        let meta = fs_err::metadata(image.rootfs()).unwrap();
        assert_eq!(meta.len(), 8 << 20);
        assert!(meta.blocks() * 512 < 1 << 20, "rootfs is not sparse");
    }

    #[test]
    fn corrupted_bundle_is_refused_and_leaves_nothing() {
        let (_root, paths, bundle) = published();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"initrd.img of DEFAULT").unwrap();
        fs_err::write(bundle.join("initrd.img.gz"), gz.finish().unwrap()).unwrap();
        let url = serve(&bundle);

        let err = pull(&paths, &url, None, Limits::default(), &|_| {}).unwrap_err();

        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(store::list(&paths).unwrap().is_empty());
        let left: Vec<String> = fs_err::read_dir(paths.images_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn bundle_file_longer_than_declared_is_cut_off_and_refused() {
        let (_root, paths, bundle) = published();
        // A server that sends 32 MiB where the manifest declares a few bytes.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&vec![7u8; 32 << 20]).unwrap();
        fs_err::write(bundle.join("initrd.img.gz"), gz.finish().unwrap()).unwrap();
        let url = serve(&bundle);
        let pulled = std::sync::Mutex::new(0u64);

        let err = pull(&paths, &url, None, Limits::default(), &|p| {
            *pulled.lock().unwrap() = p.done;
        })
        .unwrap_err();

        assert!(
            err.to_string()
                .contains("initrd.img.gz holds more than the"),
            "{err}"
        );
        assert!(*pulled.lock().unwrap() < 1 << 20);
        assert!(fs_err::read_dir(paths.images_dir())
            .unwrap()
            .next()
            .is_none());
    }

    #[test]
    fn bundle_over_the_size_limit_is_refused_before_download() {
        let (_root, paths, bundle) = published();
        let url = serve(&bundle);
        let limits = Limits {
            max_bytes: 1 << 20,
            max_entries: 10,
        };

        let err = pull(&paths, &url, None, limits, &|_| {}).unwrap_err();

        assert!(matches!(err, ImageError::TooLarge { .. }), "{err}");
        assert_eq!(
            err.hint().unwrap(),
            "raise `import_max_mib` in config.toml if you trust the source"
        );
        assert!(!paths.images_dir().exists() || store::list(&paths).unwrap().is_empty());
    }

    #[test]
    fn missing_bundle_file_is_a_download_error() {
        let (_root, paths, bundle) = published();
        fs_err::remove_file(bundle.join("vmlinux.gz")).unwrap();
        let url = serve(&bundle);
        let err = pull(&paths, &url, None, Limits::default(), &|_| {}).unwrap_err();
        assert!(matches!(err, ImageError::Download { .. }), "{err}");
    }

    #[test]
    fn garbage_manifest_is_a_bundle_error() {
        let (_root, paths, bundle) = published();
        fs_err::write(bundle.join("manifest.json"), "<html>").unwrap();
        let url = serve(&bundle);
        let err = pull(&paths, &url, None, Limits::default(), &|_| {}).unwrap_err();
        assert!(
            err.to_string().contains("manifest.json is not valid"),
            "{err}"
        );
    }
}
