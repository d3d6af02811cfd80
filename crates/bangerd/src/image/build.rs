//! `image build`: a bootable image from Debian packages alone.
//!
//! Phases: `check` (inputs unchanged: done), `rootfs` (debootstrap), `kernel` and
//! `initramfs` (cached boot files), `ext4` (mkfs.ext4 -d), `digest` (manifest). All work
//! happens in a hidden staging directory that becomes the image by one rename.

use std::path::Path;
use std::time::Instant;

use banger_host::config::Paths;
use banger_wire::api::ImageBuildSpec;
use banger_wire::bundle;
use banger_wire::user::GuestUser;
use sha2::{Digest, Sha256};

use super::error::ImageError;
use super::manifest::{self, BuildInputs, Manifest, Origin, FORMAT, RECIPE};
use super::name::{validate_name, validate_package, DEFAULT_IMAGE};
use super::store::{self, Image, Staging};
use super::{boot, ext4, initramfs, mirror, rootfs, Progress, ProgressFn};

/// Default suite and size of a built image.
pub const DEFAULT_SUITE: &str = "bookworm";
pub const DEFAULT_SIZE_MIB: u64 = 4096;

/// Builds (or finds up to date) the image `spec` describes, installing `agent_bin` as
/// the guest agent. Blocking and slow (about a minute); run it on a blocking thread.
pub fn build(
    paths: &Paths,
    spec: &ImageBuildSpec,
    agent_bin: &Path,
    progress: ProgressFn<'_>,
) -> Result<Image, ImageError> {
    let name = spec.name.as_deref().unwrap_or(DEFAULT_IMAGE);
    validate_name(name)?;
    let inputs = inputs(spec, agent_bin, Path::new("/"))?;
    let digest = inputs.digest();
    let images = paths.images_dir();
    let _lock = store::lock(&images, name)?;
    if !spec.force {
        if let Some(image) = up_to_date(paths, name, &digest) {
            progress(Progress::step(
                "check",
                format!("image {name} is up to date"),
            ));
            return Ok(image);
        }
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(ImageError::NeedsRoot);
    }
    let started = Instant::now();
    let staging = Staging::new(&images, name)?;
    let tree = staging.path().join("tree");
    let debs = boot::debs_dir(&paths.cache_dir);

    progress(Progress::step(
        "rootfs",
        format!("debootstrap {} from {}", inputs.suite, inputs.mirror),
    ));
    let mut steps = 0;
    rootfs::debootstrap(
        &inputs.suite,
        &inputs.mirror,
        &inputs.packages,
        &debs,
        &tree,
        &mut |line| {
            if let Some(msg) = line.strip_prefix("I: ") {
                steps += 1;
                progress(Progress {
                    phase: "rootfs".into(),
                    done: steps,
                    total: None,
                    message: Some(msg.to_string()),
                });
            }
        },
    )?;
    let boot = boot::prepare(
        &paths.cache_dir,
        &rootfs::lists_dir(&tree),
        &inputs.mirror,
        progress,
    )?;
    if let Some(user) = &inputs.user {
        progress(Progress::step("user", user_step(user, inputs.sudo)));
        rootfs::add_user(&tree, user, inputs.sudo)?;
    }
    rootfs::finish(&tree, agent_bin)?;

    progress(Progress::step("ext4", format!("{} MiB", inputs.size_mib)));
    ext4::make_rootfs(&tree, &staging.path().join(bundle::ROOTFS), inputs.size_mib)?;
    store::remove_tree(&tree)?;
    boot.install(staging.path())?;

    let files = manifest::digest_files(staging.path(), &|done, total| {
        progress(Progress::bytes("digest", done, total, "sha256"));
    })?;
    let manifest = Manifest {
        format: FORMAT,
        name: name.to_string(),
        created_at: now_rfc3339(),
        inputs_digest: digest,
        origin: Origin::Build { inputs },
        boot: boot.info,
        files,
        run: Default::default(),
        lacks: Vec::new(),
    };
    manifest.write(&staging.path().join(bundle::MANIFEST))?;
    let target = images.join(name);
    staging.commit(&target)?;
    tracing::info!(image = %name, secs = started.elapsed().as_secs(), "image built");
    Image::open(&target)
}

/// The inputs of a build after defaults, with the agent's digest.
pub fn inputs(
    spec: &ImageBuildSpec,
    agent_bin: &Path,
    host_root: &Path,
) -> Result<BuildInputs, ImageError> {
    let agent = rootfs::read_agent(agent_bin)?;
    let mut packages: Vec<String> = rootfs::BASE_PACKAGES
        .iter()
        .map(|p| p.to_string())
        .collect();
    for p in &spec.packages {
        validate_package(p)?;
        packages.push(p.clone());
    }
    if spec.sudo {
        if spec.user.is_none() {
            return Err(ImageError::SudoWithoutUser);
        }
        packages.push("sudo".into());
    }
    packages.sort();
    packages.dedup();
    let suite = spec.suite.clone().unwrap_or_else(|| DEFAULT_SUITE.into());
    validate_package(&suite).map_err(|_| ImageError::InvalidInput {
        what: "suite",
        value: suite.clone(),
    })?;
    let size_mib = spec.size_mib.unwrap_or(DEFAULT_SIZE_MIB);
    if size_mib > super::ext4::MAX_DISK_MIB {
        return Err(ImageError::InvalidInput {
            what: "image size in MiB (at most 16 TiB)",
            value: size_mib.to_string(),
        });
    }
    Ok(BuildInputs {
        suite,
        mirror: mirror::resolve(spec.mirror.as_deref(), host_root),
        packages,
        size_mib,
        agent_sha256: hex::encode(Sha256::digest(&agent)),
        recipe: RECIPE,
        init_sha256: hex::encode(Sha256::digest(initramfs::INIT_SCRIPT.as_bytes())),
        user: spec.user.clone(),
        sudo: spec.sudo,
    })
}

fn user_step(user: &GuestUser, sudo: bool) -> String {
    let sudo = if sudo { " with passwordless sudo" } else { "" };
    format!("user {} with a home in {}{sudo}", user.name(), user.home())
}

/// The existing image `name` when it was built from inputs with `digest` and is intact.
fn up_to_date(paths: &Paths, name: &str, digest: &str) -> Option<Image> {
    let image = store::get(paths, name).ok()?;
    (image.manifest().inputs_digest == digest).then_some(image)
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::manifest::tests::image_dir;

    fn fake_agent(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("banger-agent");
        let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
        elf.resize(64, 0);
        fs_err::write(&path, elf).unwrap();
        path
    }

    fn spec() -> ImageBuildSpec {
        ImageBuildSpec {
            mirror: Some("http://deb.debian.org/debian".into()),
            ..Default::default()
        }
    }

    #[test]
    fn same_inputs_find_the_existing_image_without_building() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::under(root.path());
        let agent = fake_agent(root.path());
        let inputs = inputs(&spec(), &agent, root.path()).unwrap();
        let dir = paths.images_dir().join("default");
        fs_err::create_dir_all(&dir).unwrap();
        image_dir(&dir, "default", inputs);
        let events = std::sync::Mutex::new(Vec::new());

        let image = build(&paths, &spec(), &agent, &|p| events.lock().unwrap().push(p)).unwrap();

        assert_eq!(image.dir(), dir);
        let events = events.into_inner().unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].phase, "check");
    }

    #[test]
    fn changed_inputs_or_force_do_not_count_as_up_to_date() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::under(root.path());
        let agent = fake_agent(root.path());
        let old = inputs(&spec(), &agent, root.path()).unwrap();
        let dir = paths.images_dir().join("default");
        fs_err::create_dir_all(&dir).unwrap();
        image_dir(&dir, "default", old.clone());
        let mut more = spec();
        more.packages = vec!["vim".into()];
        let new = inputs(&more, &agent, root.path()).unwrap();
        assert!(up_to_date(&paths, "default", &new.digest()).is_none());
        assert!(up_to_date(&paths, "default", &old.digest()).is_some());
    }

    #[test]
    fn image_size_past_the_disk_cap_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let agent = fake_agent(root.path());
        let mut s = spec();
        s.size_mib = Some(17592186044417);

        let err = inputs(&s, &agent, root.path()).unwrap_err();

        assert_eq!(
            err.to_string(),
            "invalid image size in MiB (at most 16 TiB) \"17592186044417\""
        );
    }

    #[test]
    fn a_user_changes_the_digest_and_sudo_adds_its_package() {
        let root = tempfile::tempdir().unwrap();
        let agent = fake_agent(root.path());
        let plain = inputs(&spec(), &agent, root.path()).unwrap();
        let mut s = spec();
        s.user = Some("dev".parse().unwrap());
        s.sudo = true;

        let with_user = inputs(&s, &agent, root.path()).unwrap();

        assert_ne!(with_user.digest(), plain.digest());
        assert!(with_user.packages.contains(&"sudo".to_string()));
        assert!(!serde_json::to_string(&plain).unwrap().contains("user"));
    }

    #[test]
    fn sudo_without_a_user_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let agent = fake_agent(root.path());
        let mut s = spec();
        s.sudo = true;

        let err = inputs(&s, &agent, root.path()).unwrap_err();

        assert!(matches!(err, ImageError::SudoWithoutUser), "{err}");
    }

    #[test]
    fn inputs_are_normalised() {
        let root = tempfile::tempdir().unwrap();
        let agent = fake_agent(root.path());
        let mut s = spec();
        s.packages = vec!["vim".into(), "git".into()];
        let got = inputs(&s, &agent, root.path()).unwrap();
        assert_eq!(
            got.packages,
            [
                "ca-certificates",
                "git",
                "iproute2",
                "openssh-server",
                "vim"
            ]
        );
        assert_eq!(got.suite, "bookworm");
        assert_eq!(got.size_mib, 4096);
    }

    #[test]
    fn bad_package_or_agent_is_refused_before_any_work() {
        let root = tempfile::tempdir().unwrap();
        let agent = fake_agent(root.path());
        let mut s = spec();
        s.packages = vec!["--root=/".into()];
        assert!(matches!(
            inputs(&s, &agent, root.path()).unwrap_err(),
            ImageError::InvalidInput { .. }
        ));
        let not_elf = root.path().join("agent.sh");
        fs_err::write(&not_elf, "#!/bin/sh\n").unwrap();
        assert!(matches!(
            inputs(&spec(), &not_elf, root.path()).unwrap_err(),
            ImageError::AgentNotElf { .. }
        ));
    }

    #[test]
    fn failed_build_leaves_no_partial_image() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root to get past the root check");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::under(root.path());
        let agent = fake_agent(root.path());
        let mut s = spec();
        // Nothing serves this mirror, so debootstrap fails after the staging dir exists.
        s.mirror = Some(format!("file://{}/no-mirror", root.path().display()));
        let err = build(&paths, &s, &agent, &|_| {}).unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::Command { .. } | ImageError::ToolMissing { .. }
            ),
            "{err}"
        );
        let left: Vec<String> = fs_err::read_dir(paths.images_dir())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
