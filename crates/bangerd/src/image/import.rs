//! `image import`: an image from someone else's root file system. Accepted sources, all
//! as one tar stream (the CLI reads the user's file, or tars the user's directory, as
//! the user; the daemon never opens a path it is given): a rootfs tarball (plain or
//! gzip), a `docker save` archive, and an OCI image layout. The result is ext4 via
//! `mkfs.ext4 -d`, with the agent injected and the cached boot files (kernel,
//! initramfs) of a previous build.

use std::io::Read;
use std::path::Path;

use banger_host::config::{Limits, Paths};
use banger_wire::api::ImageRunConfig;
use banger_wire::bundle;
use sha2::{Digest, Sha256};

use super::build::now_rfc3339;
use super::error::{ImageError, IoContext};
use super::manifest::{self, Manifest, Origin, FORMAT};
use super::name::validate_name;
use super::store::{self, Image, Staging};
use super::{boot, ext4, layers, oci, rootfs, Progress, ProgressFn};
use crate::failpoint::failpoint;

/// Imports the tar stream `src` as image `name` (derived from `source`, the path the
/// user gave, when absent), installing `agent_bin` as the guest agent and unpacking no
/// more than `limits`. Blocking; run it on a blocking thread.
pub fn import(
    paths: &Paths,
    src: impl Read + 'static,
    source: &str,
    name: Option<&str>,
    agent_bin: &Path,
    limits: Limits,
    progress: ProgressFn<'_>,
) -> Result<Image, ImageError> {
    let shown = Path::new(source);
    let name = match name {
        Some(n) => n.to_string(),
        None => name_from_path(shown).ok_or_else(|| ImageError::Import {
            path: shown.to_path_buf(),
            reason: "no image name can be made from the file name; give one".into(),
        })?,
    };
    let source = source.to_string();
    let recipe = Recipe {
        name: &name,
        shown,
        agent_bin,
        origin: Box::new(move |agent_sha256| {
            let inputs_digest = format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("import\0{source}\0{agent_sha256}")))
            );
            let origin = Origin::Import {
                path: source,
                agent_sha256,
            };
            (origin, inputs_digest)
        }),
        run: ImageRunConfig::default(),
    };
    make(paths, recipe, progress, |work, tree| {
        fill_tree(src, shown, work, tree, limits, progress)
    })
}

/// What an image made from someone else's root tree is, besides the tree.
pub(super) struct Recipe<'a> {
    pub name: &'a str,
    /// Names the source in errors and logs.
    pub shown: &'a Path,
    pub agent_bin: &'a Path,
    /// The origin and inputs digest, given the agent's sha256.
    pub origin: Box<dyn FnOnce(String) -> (Origin, String) + 'a>,
    pub run: ImageRunConfig,
}

/// Makes image `recipe.name` from the root tree that `fill(work, tree)` puts in `tree`
/// (`work` is scratch space): the agent installed, ext4, the cached boot files, the
/// manifest. Nothing is left behind on failure.
pub(super) fn make(
    paths: &Paths,
    recipe: Recipe<'_>,
    progress: ProgressFn<'_>,
    fill: impl FnOnce(&Path, &Path) -> Result<(), ImageError>,
) -> Result<Image, ImageError> {
    let Recipe {
        name,
        shown,
        agent_bin,
        origin,
        run,
    } = recipe;
    validate_name(name)?;
    let agent = rootfs::read_agent(agent_bin)?;
    if !nix::unistd::geteuid().is_root() {
        return Err(ImageError::NeedsRoot);
    }
    let boot = boot::latest(&paths.cache_dir)?;
    let images = paths.images_dir();
    let _lock = store::lock(&images, name)?;
    if images.join(name).exists() {
        return Err(ImageError::AlreadyExists { name: name.into() });
    }
    let staging = Staging::new(&images, name)?;
    let tree = staging.path().join("tree");
    fill(staging.path(), &tree)?;
    failpoint("import.after_tree");
    if fs_err::read_dir(&tree)
        .ctx(|| "list the root tree".into())?
        .next()
        .is_none()
    {
        return Err(ImageError::NotAnImage {
            path: shown.to_path_buf(),
            reason: "it holds no files".into(),
        });
    }
    let lacks = rootfs::lacks(&tree);
    rootfs::finish(&tree, agent_bin)?;

    // The base is read-only under the overlay, so free space in it is of no use.
    let needed = ext4::estimate_mib(&tree);
    let size_mib = needed + needed / 4 + 64;
    progress(Progress::step("ext4", format!("{size_mib} MiB")));
    ext4::make_rootfs(&tree, &staging.path().join(bundle::ROOTFS), size_mib)?;
    failpoint("import.after_rootfs");
    store::remove_tree(&tree)?;
    boot.install(staging.path())?;
    let files = manifest::digest_files(staging.path(), &|done, total| {
        progress(Progress::bytes("digest", done, total, "sha256"));
    })?;
    let (origin, inputs_digest) = origin(hex::encode(Sha256::digest(&agent)));
    let manifest = Manifest {
        format: FORMAT,
        name: name.to_string(),
        created_at: now_rfc3339(),
        origin,
        inputs_digest,
        boot: boot.info,
        files,
        run,
        lacks,
    };
    manifest.write(&staging.path().join(bundle::MANIFEST))?;
    let target = images.join(name);
    staging.commit(&target)?;
    failpoint("import.after_commit");
    tracing::info!(image = %name, source = %shown.display(), size_mib, "image made");
    Image::open(&target)
}

/// `ubuntu-22.04.tar.gz` -> `ubuntu-22`; `None` when nothing usable is left.
fn name_from_path(src: &Path) -> Option<String> {
    let file = src.file_name()?.to_string_lossy().to_lowercase();
    let stem = file.split('.').next().unwrap_or("");
    let mut name: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name.truncate(63);
    let name = name.trim_matches('-').to_string();
    validate_name(&name).ok().map(|()| name)
}

/// Puts the root file system in the tar stream `src` (shown as `shown`) into `tree`,
/// using `work` for scratch space.
fn fill_tree(
    src: impl Read + 'static,
    shown: &Path,
    work: &Path,
    tree: &Path,
    limits: Limits,
    progress: ProgressFn<'_>,
) -> Result<(), ImageError> {
    // Unpack it, then see whether it was a container image or a root tree.
    let unpacked = work.join("unpacked");
    fs_err::create_dir_all(&unpacked).ctx(|| "create an unpack directory".into())?;
    progress(Progress::step(
        "import",
        format!("unpacking {}", shown.display()),
    ));
    let budget = layers::Budget::new(limits);
    layers::apply(&unpacked, layers::open(src, shown)?, shown, &budget)?;
    match oci::detect(&unpacked)? {
        Some(layout) => {
            apply_layers(&unpacked, layout, tree, limits, progress)?;
            store::remove_tree(&unpacked)
        }
        None => fs_err::rename(&unpacked, tree).ctx(|| "move the root tree".into()),
    }
}

/// Applies the layers of the image in `dir` onto `tree`, all of them within `limits`.
fn apply_layers(
    dir: &Path,
    layout: oci::Layout,
    tree: &Path,
    limits: Limits,
    progress: ProgressFn<'_>,
) -> Result<(), ImageError> {
    let all = oci::layers(dir, layout)?;
    let budget = layers::Budget::new(limits);
    fs_err::create_dir_all(tree).ctx(|| "create the root tree".into())?;
    for (i, layer) in all.iter().enumerate() {
        progress(Progress {
            phase: "import".into(),
            done: i as u64,
            total: Some(all.len() as u64),
            message: Some(format!("layer {}", i + 1)),
        });
        apply_layer(dir, layer, tree, &budget)?;
    }
    Ok(())
}

/// Applies one layer file of `dir`, checking its digest (when known) as it streams
/// through.
pub(super) fn apply_layer(
    dir: &Path,
    layer: &oci::Layer,
    tree: &Path,
    budget: &layers::Budget,
) -> Result<(), ImageError> {
    let file = oci::open(dir, &layer.path)?;
    let shown = dir.join(&layer.path);
    let hashing = HashingReader {
        inner: file,
        hasher: Sha256::new(),
    };
    let shared = std::rc::Rc::new(std::cell::RefCell::new(Some(hashing)));
    let reader = SharedReader(shared.clone());
    let tar = layers::open(reader, &shown)?;
    let tar: Box<dyn Read> = match layer.digest {
        Some(_) => Box::new(layers::EndPadded::new(tar)),
        None => tar,
    };
    layers::apply(tree, tar, &shown, budget)?;
    let Some(mut rest) = shared.borrow_mut().take() else {
        return Ok(());
    };
    // The tar reader stops at the end-of-archive marker; hash any padding after it.
    std::io::copy(&mut rest, &mut std::io::sink()).ctx(|| "read a layer".into())?;
    let actual = format!("sha256:{}", hex::encode(rest.hasher.finalize()));
    match &layer.digest {
        Some(expected) if *expected != actual => Err(ImageError::DigestMismatch {
            what: shown.display().to_string(),
            expected: expected.clone(),
            actual,
        }),
        _ => Ok(()),
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Lets the digest be finished after the decompressor that reads through it is dropped.
struct SharedReader(std::rc::Rc<std::cell::RefCell<Option<HashingReader<fs_err::File>>>>);

impl Read for SharedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.borrow_mut().as_mut() {
            Some(r) => r.read(buf),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::image::cmd;
    use crate::image::layers::tests::layer;
    use banger_wire::Diagnostic;
    use std::path::PathBuf;
    use std::process::Command;
    use tar::EntryType;

    /// Imports the file at `path` as the CLI sends it: its bytes, named by its path.
    fn import_file(
        paths: &Paths,
        path: &Path,
        name: Option<&str>,
        agent: &Path,
        limits: Limits,
    ) -> Result<Image, ImageError> {
        let file = std::fs::File::open(path).unwrap();
        let source = path.display().to_string();
        import(paths, file, &source, name, agent, limits, &|_| {})
    }

    pub(crate) fn ready() -> bool {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: import needs root (it keeps file owners)");
            return false;
        }
        if cmd::tool("mkfs.ext4", "e2fsprogs").is_err() {
            eprintln!("skipping: mkfs.ext4 not installed");
            return false;
        }
        true
    }

    /// A store with cached boot files and a fake agent.
    pub(crate) fn setup() -> (tempfile::TempDir, Paths, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::under(root.path());
        let boot = paths.cache_dir.join("boot/linux-test_1.abc");
        fs_err::create_dir_all(&boot).unwrap();
        for f in [bundle::VMLINUX, bundle::BZIMAGE, bundle::INITRD] {
            fs_err::write(boot.join(f), f).unwrap();
        }
        fs_err::write(
            boot.join("boot.json"),
            r#"{"kernel_package":"linux-test","kernel_version":"1","kernel_deb_sha256":"00","busybox_version":"1","modules":[]}"#,
        )
        .unwrap();
        let agent = root.path().join("agent");
        let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
        elf.resize(64, 0);
        fs_err::write(&agent, elf).unwrap();
        (root, paths, agent)
    }

    pub(crate) fn rootfs_layer() -> Vec<u8> {
        layer(&[
            ("etc/", EntryType::Directory, ""),
            ("etc/os-release", EntryType::Regular, "ID=test"),
            ("etc/ssh/", EntryType::Directory, ""),
            ("etc/ssh/ssh_host_rsa_key", EntryType::Regular, "secret"),
            ("usr/", EntryType::Directory, ""),
            ("usr/bin/", EntryType::Directory, ""),
            ("bin", EntryType::Symlink, "usr/bin"),
            ("usr/bin/sh", EntryType::Regular, "shell"),
        ])
    }

    /// Lists the root directory of an ext4 image with debugfs (no mount).
    pub(crate) fn ls(rootfs: &Path, dir: &str) -> String {
        let out = Command::new(cmd::tool("debugfs", "e2fsprogs").unwrap())
            .args(["-R", &format!("ls -l {dir}")])
            .arg(rootfs)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn rootfs_tarball_becomes_an_image_with_the_agent() {
        if !ready() {
            return;
        }
        let (root, paths, agent) = setup();
        let tarball = root.path().join("my-rootfs.tar");
        fs_err::write(&tarball, rootfs_layer()).unwrap();

        let image = import_file(&paths, &tarball, None, &agent, Limits::default()).unwrap();

        assert_eq!(image.name(), "my-rootfs");
        assert!(image.manifest().source().starts_with("import:"));
        assert!(ls(&image.rootfs(), "/usr/local/sbin").contains("banger-agent"));
        assert!(ls(&image.rootfs(), "/etc").contains("os-release"));
        assert!(!ls(&image.rootfs(), "/etc/ssh").contains("ssh_host_rsa_key"));
        assert_eq!(
            fs_err::read_to_string(image.initrd()).unwrap(),
            "initrd.img"
        );
    }

    #[test]
    fn oci_layout_with_whiteout_becomes_an_image() {
        if !ready() {
            return;
        }
        let (root, paths, agent) = setup();
        let layout = root.path().join("layout");
        fs_err::create_dir_all(&layout).unwrap();
        let top = layer(&[("etc/.wh.os-release", EntryType::Regular, "")]);
        oci::tests::oci_dir(&layout, &[&rootfs_layer(), &top]);

        let mut tarball = tar::Builder::new(Vec::new());
        tarball.append_dir_all(".", &layout).unwrap();
        let archive = root.path().join("layout.tar");
        fs_err::write(&archive, tarball.into_inner().unwrap()).unwrap();

        let image = import_file(&paths, &archive, Some("oci"), &agent, Limits::default()).unwrap();

        let etc = ls(&image.rootfs(), "/etc");
        assert!(!etc.contains("os-release"), "{etc}");
        assert!(etc.contains("hostname"), "{etc}");
    }

    #[test]
    fn docker_save_archive_becomes_an_image() {
        if !ready() {
            return;
        }
        let (root, paths, agent) = setup();
        let mut outer = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            outer.append_data(&mut h, path, data).unwrap();
        };
        add("abc/layer.tar", &rootfs_layer());
        add(
            "def/layer.tar",
            &layer(&[("etc/motd", EntryType::Regular, "hi")]),
        );
        add(
            "manifest.json",
            br#"[{"Config":"c.json","RepoTags":["t:1"],"Layers":["abc/layer.tar","def/layer.tar"]}]"#,
        );
        let archive = root.path().join("saved.tar");
        fs_err::write(&archive, outer.into_inner().unwrap()).unwrap();

        let image = import_file(&paths, &archive, None, &agent, Limits::default()).unwrap();

        let etc = ls(&image.rootfs(), "/etc");
        assert!(etc.contains("motd") && etc.contains("os-release"), "{etc}");
        assert!(!ls(&image.rootfs(), "/").contains("manifest.json"));
    }

    #[test]
    fn escaping_tarball_fails_and_leaves_no_image() {
        if !ready() {
            return;
        }
        let (root, paths, agent) = setup();
        let tarball = root.path().join("evil.tar");
        fs_err::write(&tarball, layer(&[("../../x", EntryType::Regular, "x")])).unwrap();

        let err = import_file(&paths, &tarball, None, &agent, Limits::default()).unwrap_err();

        assert!(matches!(err, ImageError::UnsafeEntry { .. }), "{err}");
        let left: Vec<String> = fs_err::read_dir(paths.images_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn import_without_a_cached_kernel_says_to_build_first() {
        if !ready() {
            return;
        }
        let (root, paths, agent) = setup();
        fs_err::remove_dir_all(paths.cache_dir.join("boot")).unwrap();
        let tarball = root.path().join("r.tar");
        fs_err::write(&tarball, rootfs_layer()).unwrap();
        let err = import_file(&paths, &tarball, None, &agent, Limits::default()).unwrap_err();
        assert_eq!(
            err.hint().unwrap(),
            "run `banger image build` once to fetch a kernel"
        );
    }

    /// Names left in the image store: none after a refused import.
    pub(crate) fn store_entries(paths: &Paths) -> Vec<String> {
        fs_err::read_dir(paths.images_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// An outer `docker save`-like archive from `(path, kind, data-or-link-target)`.
    fn outer(entries: &[(&str, EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(if kind.is_symlink() {
                0
            } else {
                data.len() as u64
            });
            if kind.is_symlink() {
                let target = std::str::from_utf8(data).unwrap();
                b.append_link(&mut h, path, target).unwrap();
            } else {
                h.set_cksum();
                b.append_data(&mut h, path, *data).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn empty_file_is_refused_and_leaves_nothing() {
        if !ready() {
            return;
        }
        let (root, paths, agent) = setup();
        let empty = root.path().join("empty.tar");
        fs_err::write(&empty, b"").unwrap();

        let err = import_file(&paths, &empty, None, &agent, Limits::default()).unwrap_err();

        assert!(matches!(err, ImageError::NotAnImage { .. }), "{err}");
        assert_eq!(err.code(), banger_wire::ErrorCode::InvalidArgument);
        assert!(err.hint().unwrap().contains("tarball"));
        assert!(
            store_entries(&paths).is_empty(),
            "{:?}",
            store_entries(&paths)
        );
    }

    #[test]
    fn file_that_is_no_archive_is_refused_and_leaves_nothing() {
        if !ready() {
            return;
        }
        let (root, paths, agent) = setup();
        let text = root.path().join("notes.txt");
        fs_err::write(&text, "just some notes\n").unwrap();

        let err = import_file(&paths, &text, None, &agent, Limits::default()).unwrap_err();

        assert!(matches!(err, ImageError::NotAnImage { .. }), "{err}");
        assert!(
            store_entries(&paths).is_empty(),
            "{:?}",
            store_entries(&paths)
        );
    }

    #[test]
    fn archive_with_manifest_linked_to_dev_zero_is_refused() {
        if !ready() {
            return;
        }
        let (root, paths, agent) = setup();
        let archive = root.path().join("saved.tar");
        let bytes = outer(&[("manifest.json", EntryType::Symlink, b"/dev/zero")]);
        fs_err::write(&archive, bytes).unwrap();

        let err = import_file(&paths, &archive, None, &agent, Limits::default()).unwrap_err();

        assert!(matches!(err, ImageError::NotRegular { .. }), "{err}");
        assert!(
            store_entries(&paths).is_empty(),
            "{:?}",
            store_entries(&paths)
        );
    }

    #[test]
    fn layer_path_through_a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        fs_err::create_dir(host.path().join("x")).unwrap();
        fs_err::write(
            host.path().join("x/layer.tar"),
            layer(&[("host-file", EntryType::Regular, "from the host")]),
        )
        .unwrap();
        fs_err::write(
            dir.path().join("manifest.json"),
            r#"[{"Layers":["r/x/layer.tar"]}]"#,
        )
        .unwrap();
        std::os::unix::fs::symlink(host.path(), dir.path().join("r")).unwrap();
        let tree = dir.path().join("tree");

        let err = apply_layers(
            dir.path(),
            oci::Layout::DockerSave,
            &tree,
            Limits::default(),
            &|_| {},
        )
        .unwrap_err();

        assert!(matches!(err, ImageError::NotRegular { .. }), "{err}");
        assert!(!tree.join("host-file").exists());
    }

    #[test]
    fn layers_over_the_entry_limit_are_refused_and_leave_nothing() {
        if !ready() {
            return;
        }
        let (root, paths, agent) = setup();
        let tarball = root.path().join("many.tar");
        fs_err::write(&tarball, rootfs_layer()).unwrap();
        let limits = Limits {
            max_bytes: 1 << 20,
            max_entries: 3,
        };

        let err = import_file(&paths, &tarball, None, &agent, limits).unwrap_err();

        assert_eq!(
            err.hint().unwrap(),
            "raise `import_max_entries` in config.toml if you trust the source"
        );
        assert!(
            store_entries(&paths).is_empty(),
            "{:?}",
            store_entries(&paths)
        );
    }

    #[test]
    fn names_come_from_file_names() {
        assert_eq!(
            name_from_path(Path::new("/x/Ubuntu_22.04.tar.gz")).unwrap(),
            "ubuntu-22"
        );
        assert_eq!(name_from_path(Path::new("/x/---.tar")), None);
    }
}
