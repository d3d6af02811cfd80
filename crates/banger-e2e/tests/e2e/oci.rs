//! `image pull REF` from a real registry (Debian's `docker-registry` on a loopback
//! port), fed by `umoci` and `skopeo`: the pulled image boots, a second image shares the
//! base layer through the cache, zstd layers work, and broken pulls leave nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use banger_e2e::host::{cmd, wait_for_listener, Background};
use banger_wire::api::{ImageInfo, PruneReport, RegistryPullReport};

/// What the test needs on the host, or why it skips.
fn tools() -> Result<(), String> {
    for tool in ["docker-registry", "skopeo", "umoci", "busybox"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!("no {tool} (scripts/deps.sh --dev installs it)"));
        }
    }
    Ok(())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A busybox root with `/marker` holding `marker`, `/<gone>` and an empty `/srv`.
fn rootfs(dir: &Path, marker: &str, gone: &str) -> PathBuf {
    let root = dir.join("root");
    fs_err::create_dir_all(root.join("bin")).unwrap();
    fs_err::create_dir_all(root.join("srv")).unwrap();
    let busybox = cmd("sh", &["-c", "command -v busybox"]);
    fs_err::copy(busybox.trim(), root.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "test", "pwd", "echo"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs_err::write(root.join("marker"), format!("{marker}\n")).unwrap();
    fs_err::write(root.join(gone), "removed by a whiteout\n").unwrap();
    root
}

/// The images in the store, by name.
fn images(h: &banger_e2e::Harness) -> Vec<String> {
    let list: Vec<ImageInfo> = serde_json::from_str(&h.ok(&["image", "list", "--json"])).unwrap();
    list.into_iter().map(|i| i.name).collect()
}

/// Nothing half-made: no such image, no partial download, no work directory.
fn assert_nothing_left(h: &banger_e2e::Harness, name: &str) {
    assert!(!images(h).contains(&name.to_string()), "image {name} left");
    let tmp = h.cache_dir.join("layers/tmp");
    let partial: Vec<_> = fs_err::read_dir(&tmp).unwrap().collect();
    assert!(partial.is_empty(), "partial downloads left: {partial:?}");
    let hidden: Vec<String> = fs_err::read_dir(h.state_dir.join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n.contains(name))
        .collect();
    assert!(hidden.is_empty(), "work directories left: {hidden:?}");
}

/// Deletes the named images however the test ends.
struct DropImages<'h>(&'h banger_e2e::Harness, Vec<String>);

impl Drop for DropImages<'_> {
    fn drop(&mut self) {
        for name in &self.1 {
            let _ = self.0.banger(&["image", "delete", name]);
        }
    }
}

fn pull(h: &banger_e2e::Harness, reference: &str) -> RegistryPullReport {
    let json = h.ok(&["image", "pull", reference, "--insecure", "--json"]);
    serde_json::from_str(&json).unwrap()
}

fn cached(report: &RegistryPullReport) -> Vec<bool> {
    report.layers.iter().map(|l| l.cached).collect()
}

#[test]
fn oci_pull() {
    let Some(h) = banger_e2e::turn("oci_pull") else {
        return;
    };
    if let Err(why) = tools() {
        eprintln!("skipping oci_pull: {why}");
        return;
    }
    let dir = h.run_dir.join("oci");
    let marker = format!("pulled {}", h.name("marker"));
    // Named per run, so its whiteout layer is new to the layer cache too.
    let gone = h.name("gone");
    let root = rootfs(&dir, &marker, &gone);
    let layout = format!("{}/layout", dir.display());
    let umoci = |args: &[&str]| cmd("umoci", args);
    umoci(&["init", "--layout", &layout]);
    umoci(&["new", "--image", &format!("{layout}:one")]);
    umoci(&[
        "insert",
        "--image",
        &format!("{layout}:one"),
        root.to_str().unwrap(),
        "/",
    ]);
    fs_err::write(dir.join("second"), "second layer\n").unwrap();
    let second = dir.join("second");
    umoci(&[
        "insert",
        "--image",
        &format!("{layout}:one"),
        "--tag",
        "two",
        second.to_str().unwrap(),
        "/second",
    ]);
    umoci(&[
        "insert",
        "--image",
        &format!("{layout}:two"),
        "--whiteout",
        &format!("/{gone}"),
    ]);
    umoci(&[
        "config",
        "--image",
        &format!("{layout}:two"),
        "--config.entrypoint",
        "sh",
        "--config.entrypoint",
        "-c",
        "--config.cmd",
        &format!("cat /second; test -e /{gone} || echo gone; echo $GREETING; pwd"),
        "--config.env",
        "GREETING=hello from the config",
        "--config.workingdir",
        "/srv",
    ]);
    fs_err::write(dir.join("third"), format!("{marker} three\n")).unwrap();
    let third = dir.join("third");
    umoci(&[
        "insert",
        "--image",
        &format!("{layout}:one"),
        "--tag",
        "three",
        third.to_str().unwrap(),
        "/third",
    ]);

    // The registry: its own config and storage, on a free loopback port.
    let port = free_port();
    let storage = dir.join("registry");
    let config = dir.join("registry.yml");
    fs_err::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        ),
    )
    .unwrap();
    let _registry = Background::spawn(Command::new("docker-registry").arg("serve").arg(&config));
    wait_for_listener("127.0.0.1", port);
    let repo = format!("localhost:{port}/x");
    let _images = DropImages(
        &h,
        ["one", "two", "three"]
            .map(|t| format!("localhost-{port}-x-{t}"))
            .to_vec(),
    );
    let push = |tag: &str, extra: &[&str]| {
        let mut args = vec!["copy", "--dest-tls-verify=false"];
        args.extend_from_slice(extra);
        let src = format!("oci:{layout}:{tag}");
        let dst = format!("docker://{repo}:{tag}");
        args.extend_from_slice(&[&src, &dst]);
        cmd("skopeo", &args);
    };
    push("one", &[]);
    push("two", &[]);
    push("three", &["--dest-compress-format", "zstd"]);

    // The base image: pulled, booted, the marker read.
    let one = pull(&h, &format!("{repo}:one"));
    assert_eq!(cached(&one), [false]);
    assert_eq!(one.image.lacks, ["sshd"]);
    let ran = h.ok(&[
        "vm",
        "run",
        "--rm",
        "--image",
        &format!("{repo}:one"),
        "--",
        "cat",
        "/marker",
    ]);
    assert_eq!(ran, marker);

    // A second image on the same base downloads only its own layers; with no command,
    // `vm run` runs its entrypoint, in its working directory, with its env.
    let two = pull(&h, &format!("{repo}:two"));
    assert_eq!(cached(&two), [true, false, false]);
    let ran = h.ok(&["vm", "run", "--rm", "--image", &format!("{repo}:two")]);
    assert_eq!(ran, "second layer\ngone\nhello from the config\n/srv");
    let show = h.ok(&["image", "show", &two.image.name]);
    assert!(show.contains("no sshd: `vm ssh` is unavailable"), "{show}");

    // A zstd layer (skopeo recompresses the layers the registry lacks; the base it has).
    let three = pull(&h, &format!("{repo}:three"));
    assert_eq!(cached(&three), [true, false]);
    let blob = |digest: &str| {
        let hex = digest.trim_start_matches("sha256:");
        storage.join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    };
    let magic = fs_err::read(blob(&three.layers[1].digest)).unwrap();
    assert_eq!(magic[..4], [0x28, 0xb5, 0x2f, 0xfd], "not zstd");
    let ran = h.ok(&[
        "vm",
        "run",
        "--rm",
        "--image",
        &three.image.name,
        "--",
        "cat",
        "/third",
    ]);
    assert_eq!(ran, format!("{marker} three"));

    // An unknown tag and an unknown digest: not found, nothing left.
    h.banger(&["image", "pull", &format!("{repo}:nope"), "--insecure"])
        .failure(Some(4), "manifest unknown");
    assert_nothing_left(&h, &format!("localhost-{port}-x-nope"));
    let zeros = format!("{repo}@sha256:{}", "0".repeat(64));
    h.banger(&["image", "pull", &zeros, "--insecure", "--name", "oci-zeros"])
        .failure(Some(4), "cannot pull");
    assert_nothing_left(&h, "oci-zeros");

    // A layer whose bytes changed in the registry, then one cut short: refused before
    // anything is unpacked, and the layer never enters the cache.
    for name in [&one.image.name, &two.image.name, &three.image.name] {
        h.ok(&["image", "delete", name]);
    }
    // Every way the registry's answer can be refused names the layer.
    let short = &three.layers[1].digest["sha256:".len()..][..12];
    let victim = blob(&three.layers[1].digest);
    let mut bytes = fs_err::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs_err::write(&victim, &bytes).unwrap();
    let layers = h.cache_dir.join("layers/sha256");
    fs_err::remove_file(layers.join(three.layers[1].digest.trim_start_matches("sha256:"))).unwrap();
    h.banger(&[
        "image",
        "pull",
        &format!("{repo}:three"),
        "--insecure",
        "--name",
        "oci-flipped",
    ])
    .failure(Some(3), short);
    assert_nothing_left(&h, "oci-flipped");
    fs_err::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    h.banger(&[
        "image",
        "pull",
        &format!("{repo}:three"),
        "--insecure",
        "--name",
        "oci-short",
    ])
    .failure(None, short);
    assert_nothing_left(&h, "oci-short");
    assert!(!layers
        .join(three.layers[1].digest.trim_start_matches("sha256:"))
        .exists());

    // Prune would drop the layers no image uses any more.
    let dry: PruneReport = serde_json::from_str(&h.ok(&["prune", "--dry-run", "--json"])).unwrap();
    for l in one.layers.iter().chain(&two.layers) {
        assert!(
            dry.layers.contains(&l.digest),
            "{} not prunable: {dry:?}",
            l.digest
        );
    }
}
