//! The root file system tree: debootstrap of a Debian suite, then made generic (no host
//! leftovers, no SSH host keys) with the banger agent installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use banger_wire::user::GuestUser;

use super::cmd;
use super::error::{ImageError, IoContext};

/// Packages every image has, on top of debootstrap's minbase.
pub const BASE_PACKAGES: [&str; 4] = ["openssh-server", "git", "ca-certificates", "iproute2"];
/// Where the agent lives in the guest; the initramfs execs it as PID 1.
pub const AGENT_PATH: &str = "usr/local/sbin/banger-agent";
/// debootstrap checks Release signatures against this keyring.
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Reads the agent binary to install: a static ELF executable, as it is PID 1 of guests
/// whose libc (if any) banger does not know.
pub fn read_agent(agent_bin: &Path) -> Result<Vec<u8>, ImageError> {
    let agent = fs_err::read(agent_bin).ctx(|| "read the agent binary".into())?;
    let path = agent_bin.to_path_buf();
    if !super::elf::is_elf64(&agent) {
        return Err(ImageError::AgentNotElf { path });
    }
    if !super::elf::is_static(&agent) {
        return Err(ImageError::AgentNotStatic { path });
    }
    Ok(agent)
}

/// The package index debootstrap verified and left in the tree.
pub fn lists_dir(tree: &Path) -> PathBuf {
    tree.join("var/lib/apt/lists")
}

/// Runs `debootstrap --variant=minbase` of `suite` from `mirror` into `tree`, caching
/// `.deb`s in `debs`. `on_step` gets debootstrap's `I:` lines.
pub fn debootstrap(
    suite: &str,
    mirror: &str,
    packages: &[String],
    debs: &Path,
    tree: &Path,
    on_step: &mut dyn FnMut(&str),
) -> Result<(), ImageError> {
    let debootstrap = cmd::tool("debootstrap", "debootstrap")?;
    let mut command = Command::new(debootstrap);
    command
        .arg("--variant=minbase")
        .arg(format!("--include={}", packages.join(",")))
        .arg(format!("--cache-dir={}", debs.display()));
    if !mirror.starts_with("file:") {
        if !Path::new(KEYRING).exists() {
            return Err(ImageError::KeyringMissing {
                path: KEYRING.into(),
            });
        }
        command.arg(format!("--keyring={KEYRING}"));
    }
    fs_err::create_dir_all(debs).ctx(|| "create the package cache".into())?;
    command.arg(suite).arg(tree).arg(mirror);
    let log = tree.join("debootstrap/debootstrap.log");
    cmd::run_lines(&mut command, on_step, &|| {
        let text = fs_err::read(&log).ok()?;
        Some(format!("{}:\n{}", log.display(), cmd::tail(&text)))
    })
}

/// What banger can use that the root tree `tree` (untrusted) lacks: `sshd` at the path
/// the agent starts it from (no `vm ssh`), `shell` (no `/bin/sh`). Links are resolved
/// inside the tree.
pub fn lacks(tree: &Path) -> Vec<String> {
    [("sshd", "usr/sbin/sshd"), ("shell", "bin/sh")]
        .into_iter()
        .filter(|(_, path)| {
            !super::layers::resolve(tree, Path::new(path))
                .and_then(fs_err::symlink_metadata)
                .is_ok_and(|m| m.is_file())
        })
        .map(|(what, _)| what.to_string())
        .collect()
}

/// Makes a root tree generic and installs the agent. Works on untrusted trees
/// (imports): no symlink inside `tree` is ever followed.
/// - SSH host keys go (the agent makes new ones at first boot, so each VM differs);
/// - the host's hostname and resolv.conf that debootstrap copied go;
/// - apt's downloaded packages and indexes go (call after the kernel was looked up).
pub fn finish(tree: &Path, agent_bin: &Path) -> Result<(), ImageError> {
    if let Some(ssh) = real_dir(tree, "etc/ssh") {
        clear_where(&ssh, &|name| name.starts_with("ssh_host_"))?;
    }
    write_new(tree, "etc/hostname", b"banger\n", 0o644)?;
    write_new(
        tree,
        "etc/resolv.conf",
        b"# written by banger-agent at boot\n",
        0o644,
    )?;
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        if let Some(d) = real_dir(tree, dir) {
            clear_where(&d, &|name| name != "lock")?;
        }
    }
    if let Some(d) = real_dir(tree, "var/cache/apt") {
        clear_where(&d, &|name| name.ends_with(".bin"))?;
    }
    let agent = fs_err::read(agent_bin).ctx(|| "read the agent binary".into())?;
    write_new(tree, AGENT_PATH, &agent, 0o755)
}

/// Creates `user` in a freshly bootstrapped `tree` with `useradd` (a home from
/// /etc/skel, a group of its own, bash), and with `sudo` a sudoers.d entry giving it
/// passwordless sudo, refused when the tree has no sudo. Root exists already.
pub fn add_user(tree: &Path, user: &GuestUser, sudo: bool) -> Result<(), ImageError> {
    if !user.is_root() {
        let chroot = cmd::tool("chroot", "coreutils")?;
        let mut useradd = Command::new(chroot);
        useradd.arg(tree).args([
            "useradd",
            "--create-home",
            "--user-group",
            "--shell",
            "/bin/bash",
        ]);
        if let Some(uid) = user.uid() {
            useradd.args(["--uid", &uid.to_string()]);
        }
        cmd::run(useradd.arg(user.name()))?;
    }
    if sudo {
        if !tree.join("usr/bin/sudo").exists() {
            return Err(ImageError::NoSudo);
        }
        let name = user.name();
        let rule = format!("{name} ALL=(ALL:ALL) NOPASSWD: ALL\n");
        write_new(
            tree,
            &format!("etc/sudoers.d/banger-{name}"),
            rule.as_bytes(),
            0o440,
        )?;
    }
    Ok(())
}

/// `tree/rel` when every component of `rel` is a real directory (no symlink).
fn real_dir(tree: &Path, rel: &str) -> Option<PathBuf> {
    let mut path = tree.to_path_buf();
    for part in rel.split('/') {
        path.push(part);
        if !path.symlink_metadata().ok()?.is_dir() {
            return None;
        }
    }
    Some(path)
}

/// Writes `tree/rel` afresh. Parent components that are not real directories
/// (symlinks, files) are replaced by directories, and whatever was at `rel` is removed
/// first, so the write cannot land outside `tree`.
pub(crate) fn write_new(tree: &Path, rel: &str, data: &[u8], mode: u32) -> Result<(), ImageError> {
    use fs_err::os::unix::fs::OpenOptionsExt;
    use std::io::Write;
    let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    let mut path = tree.to_path_buf();
    for part in parent.split('/').filter(|p| !p.is_empty()) {
        path.push(part);
        match path.symlink_metadata() {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => fs_err::remove_file(&path).ctx(|| format!("replace /{rel}"))?,
            Err(_) => {}
        }
        fs_err::create_dir(&path).ctx(|| format!("create the directory of /{rel}"))?;
    }
    path.push(name);
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => fs_err::remove_dir_all(&path).ctx(|| format!("replace /{rel}"))?,
        Ok(_) => fs_err::remove_file(&path).ctx(|| format!("replace /{rel}"))?,
        Err(_) => {}
    }
    let mut file = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .ctx(|| format!("write /{rel}"))?;
    file.write_all(data).ctx(|| format!("write /{rel}"))?;
    set_mode(&path, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .ctx(|| format!("chmod {}", path.display()))
}

/// Removes the regular files directly in `dir` whose name passes `remove`.
fn clear_where(dir: &Path, remove: &dyn Fn(&str) -> bool) -> Result<(), ImageError> {
    let Ok(entries) = fs_err::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.filter_map(Result::ok) {
        let is_file = entry
            .file_type()
            .is_ok_and(|t| t.is_file() || t.is_symlink());
        if is_file && remove(&entry.file_name().to_string_lossy()) {
            fs_err::remove_file(entry.path()).ctx(|| format!("clean {}", dir.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_must_be_a_static_elf() {
        use super::super::elf::tests::elf_with_program_headers;
        const PT_LOAD: u32 = 1;
        const PT_INTERP: u32 = 3;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            fs_err::write(&p, bytes).unwrap();
            p
        };
        let static_elf = write("static", &elf_with_program_headers(&[PT_LOAD]));
        let dynamic = write("dynamic", &elf_with_program_headers(&[PT_INTERP, PT_LOAD]));
        let script = write("script", b"#!/bin/sh\n");

        assert!(read_agent(&static_elf).is_ok());
        assert!(matches!(
            read_agent(&dynamic),
            Err(ImageError::AgentNotStatic { .. })
        ));
        assert!(matches!(
            read_agent(&script),
            Err(ImageError::AgentNotElf { .. })
        ));
    }

    #[test]
    fn finish_removes_host_state_and_installs_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        for d in [
            "etc/ssh",
            "var/cache/apt/archives/partial",
            "var/lib/apt/lists/partial",
        ] {
            fs_err::create_dir_all(tree.join(d)).unwrap();
        }
        fs_err::write(tree.join("etc/ssh/ssh_host_ed25519_key"), "secret").unwrap();
        fs_err::write(tree.join("etc/ssh/sshd_config"), "cfg").unwrap();
        fs_err::write(tree.join("etc/hostname"), "the-host\n").unwrap();
        std::os::unix::fs::symlink(
            "/run/systemd/resolve/stub-resolv.conf",
            tree.join("etc/resolv.conf"),
        )
        .unwrap();
        fs_err::write(tree.join("var/cache/apt/archives/bash_5_amd64.deb"), "deb").unwrap();
        fs_err::write(tree.join("var/cache/apt/pkgcache.bin"), "bin").unwrap();
        fs_err::write(tree.join("var/lib/apt/lists/x_Packages"), "idx").unwrap();
        let agent = dir.path().join("agent");
        fs_err::write(&agent, "\x7fELF agent").unwrap();

        finish(&tree, &agent).unwrap();

        assert!(!tree.join("etc/ssh/ssh_host_ed25519_key").exists());
        assert!(tree.join("etc/ssh/sshd_config").exists());
        assert_eq!(
            fs_err::read_to_string(tree.join("etc/hostname")).unwrap(),
            "banger\n"
        );
        assert!(!tree
            .join("etc/resolv.conf")
            .symlink_metadata()
            .unwrap()
            .is_symlink());
        assert!(!tree
            .join("var/cache/apt/archives/bash_5_amd64.deb")
            .exists());
        assert!(!tree.join("var/cache/apt/pkgcache.bin").exists());
        assert!(!tree.join("var/lib/apt/lists/x_Packages").exists());
        assert!(tree.join("var/lib/apt/lists/partial").is_dir());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs_err::metadata(tree.join(AGENT_PATH))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn symlinks_in_an_untrusted_tree_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        let outside = dir.path().join("outside");
        fs_err::create_dir_all(tree.join("usr/local")).unwrap();
        fs_err::create_dir_all(tree.join("etc")).unwrap();
        fs_err::create_dir_all(&outside).unwrap();
        fs_err::write(outside.join("ssh_host_rsa_key"), "host key").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("usr/local/sbin")).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("etc/ssh")).unwrap();
        std::os::unix::fs::symlink(outside.join("hostname"), tree.join("etc/hostname")).unwrap();
        let agent = dir.path().join("agent");
        fs_err::write(&agent, "agent").unwrap();

        finish(&tree, &agent).unwrap();

        assert_eq!(fs_err::read_dir(&outside).unwrap().count(), 1);
        assert!(outside.join("ssh_host_rsa_key").exists());
        assert!(tree
            .join("usr/local/sbin")
            .symlink_metadata()
            .unwrap()
            .is_dir());
        assert_eq!(fs_err::read(tree.join(AGENT_PATH)).unwrap(), b"agent");
    }
}
