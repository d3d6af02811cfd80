//! Heavy image tests: a real debootstrap build. Ignored by default (a build takes about a
//! minute and needs root, debootstrap and the network); run with
//! `BANGER_TEST_AGENT=/path/to/banger-agent cargo test -p bangerd --lib image::e2e -- --ignored --nocapture`.
//! `BANGER_TEST_ROOT` keeps the state and package cache between runs.

use std::path::PathBuf;
use std::time::Instant;

use banger_host::config::Paths;
use banger_wire::api::ImageBuildSpec;
use banger_wire::bundle;

use super::*;

fn agent() -> Option<PathBuf> {
    let agent = std::env::var_os("BANGER_TEST_AGENT").map(PathBuf::from);
    if agent.is_none() {
        eprintln!("skipping: set BANGER_TEST_AGENT to a banger-agent binary");
    }
    agent
}

fn can_build() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: building an image needs root");
        return false;
    }
    if cmd::tool("debootstrap", "debootstrap").is_err() {
        eprintln!("skipping: debootstrap is not installed");
        return false;
    }
    true
}

#[test]
#[ignore = "slow: debootstrap build of a full image (about a minute, needs root and network)"]
fn build_then_rebuild_is_a_no_op() {
    let Some(agent) = agent() else { return };
    if !can_build() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = std::env::var_os("BANGER_TEST_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let paths = Paths::under(&root);
    let spec = ImageBuildSpec {
        force: true,
        ..Default::default()
    };
    let t0 = Instant::now();
    let log = |p: Progress| {
        eprintln!(
            "{:7.1}s [{}] {}/{:?} {}",
            t0.elapsed().as_secs_f64(),
            p.phase,
            p.done,
            p.total,
            p.message.unwrap_or_default()
        )
    };

    let start = Instant::now();
    let image = build(&paths, &spec, &agent, &log).unwrap();
    let built_in = start.elapsed();
    let start = Instant::now();
    let again = build(&paths, &ImageBuildSpec::default(), &agent, &|_| {}).unwrap();
    let noop_in = start.elapsed();

    eprintln!("built in {built_in:?}, rebuild (no-op) in {noop_in:?}");
    for f in bundle::FILES {
        use std::os::unix::fs::MetadataExt;
        let m = fs_err::metadata(image.dir().join(f)).unwrap();
        eprintln!(
            "{f}: {} bytes apparent, {} bytes allocated",
            m.len(),
            m.blocks() * 512
        );
    }
    assert_eq!(again.digest(), image.digest());
    assert!(noop_in.as_secs() < 2, "no-op rebuild took {noop_in:?}");
    image.manifest().verify(image.dir(), &|_, _| {}).unwrap();
    assert!(image
        .manifest()
        .boot
        .modules
        .contains(&"overlay".to_string()));
}

/// Builds a one-layer OCI layout around a rootfs tarball.
fn oci_layout_of(tarball: &std::path::Path, dir: &std::path::Path) {
    use sha2::{Digest, Sha256};
    let layer = fs_err::read(tarball).unwrap();
    let put = |bytes: &[u8]| {
        let hex = hex::encode(Sha256::digest(bytes));
        fs_err::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs_err::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let (ld, ls) = put(&layer);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{ld}","size":{ls}}}]}}"#
    );
    let (md, ms) = put(manifest.as_bytes());
    fs_err::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    fs_err::write(
        dir.join("index.json"),
        format!(r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{ms}}}]}}"#),
    )
    .unwrap();
}

#[test]
#[ignore = "slow: imports a real rootfs tarball twice (needs root, BANGER_TEST_ROOTFS_TAR and a built image's cached kernel)"]
fn tarball_and_oci_layout_imports_match() {
    let Some(agent) = agent() else { return };
    let Some(tarball) = std::env::var_os("BANGER_TEST_ROOTFS_TAR").map(PathBuf::from) else {
        eprintln!("skipping: set BANGER_TEST_ROOTFS_TAR to a rootfs .tar.gz");
        return;
    };
    if !can_build() {
        return;
    }
    let root = PathBuf::from(std::env::var_os("BANGER_TEST_ROOT").expect("BANGER_TEST_ROOT"));
    let paths = Paths::under(&root);
    let layout = tempfile::tempdir().unwrap();
    oci_layout_of(&tarball, layout.path());
    for name in ["imp-tar", "imp-oci"] {
        let _ = delete(&paths, name);
    }

    let start = Instant::now();
    let a = import(
        &paths,
        std::fs::File::open(&tarball).unwrap(),
        &tarball.display().to_string(),
        Some("imp-tar"),
        &agent,
        Default::default(),
        &|_| {},
    )
    .unwrap();
    eprintln!("tarball import in {:?}", start.elapsed());
    let start = Instant::now();
    // As the CLI sends a directory: a tar of it.
    let mut tar = tar::Builder::new(Vec::new());
    tar.append_dir_all(".", layout.path()).unwrap();
    let b = import(
        &paths,
        std::io::Cursor::new(tar.into_inner().unwrap()),
        &layout.path().display().to_string(),
        Some("imp-oci"),
        &agent,
        Default::default(),
        &|_| {},
    )
    .unwrap();
    eprintln!("oci import in {:?}", start.elapsed());

    let listing = |image: &Image| {
        let out = std::process::Command::new("debugfs")
            .args(["-R", "ls -p /etc"])
            .arg(image.rootfs())
            .output()
            .unwrap();
        // Inode numbers differ between file systems; names, modes and owners must not.
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('/').skip(2).take(4).collect::<Vec<_>>().join("/"))
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(listing(&a), listing(&b));
    assert_eq!(
        a.manifest().files["initrd.img"],
        b.manifest().files["initrd.img"]
    );
}
