//! Heavy image tests: a real debootstrap build. Ignored by default (a build takes about a
//! minute and needs root, debootstrap and the network); run with
//! `BANGER_TEST_AGENT=/path/to/banger-agent cargo test -p bangerd --lib image::e2e -- --ignored --nocapture`.
//! `BANGER_TEST_ROOT` keeps the state and package cache between runs.

use std::path::PathBuf;
use std::time::Instant;

use banger_wire::api::ImageBuildSpec;

use super::*;
use crate::config::Paths;

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
    let log = |p: Progress| {
        eprintln!(
            "[{}] {}/{:?} {}",
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
    for f in manifest::FILES {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(image.dir().join(f)).unwrap();
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
