//! One-time guest setup when the agent is init: filesystems, environment, hostname,
//! network and SSH access, all from the `banger.*` boot config.

use std::path::Path;

use banger_wire::agent::BootConfig;

use crate::{mounts, ssh};

/// `PATH` every process started by the agent gets.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
pub const HOME: &str = "/root";

/// Mounts the early filesystems. Runs before the boot config can be read (it lives in
/// /proc).
pub fn early() {
    mounts::mount_early();
    dev_links();
}

/// Applies the boot config. Must run while the process is still single-threaded
/// (it sets environment variables).
pub fn configure(cfg: &BootConfig) {
    std::env::set_var("PATH", PATH);
    std::env::set_var("HOME", HOME);
    std::env::remove_var("PWD");
    if let Err(e) = std::env::set_current_dir("/") {
        tracing::warn!(cause = %e, "cannot chdir to /");
    }
    if let Some(name) = &cfg.hostname {
        set_hostname(name);
    }
    if let Some(key) = &cfg.ssh_key {
        if let Err(e) = ssh::install_key(key, Path::new(HOME)) {
            tracing::error!(cause = %crate::logging::chain(&e), "cannot install the SSH key");
        }
    }
}

/// The `/dev` links devtmpfs does not create.
fn dev_links() {
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        if fs_err::symlink_metadata(link).is_err() {
            if let Err(e) = std::os::unix::fs::symlink(target, link) {
                tracing::warn!(link, cause = %e, "cannot create /dev link");
            }
        }
    }
}

pub(crate) fn set_hostname(name: &str) {
    if let Err(e) = nix::unistd::sethostname(name) {
        tracing::warn!(hostname = name, cause = %e, "cannot set the hostname");
    }
    if let Err(e) = fs_err::write("/etc/hostname", format!("{name}\n")) {
        tracing::warn!(cause = %e, "cannot write /etc/hostname");
    }
    let hosts = fs_err::read_to_string("/etc/hosts").unwrap_or_default();
    if let Some(updated) = hosts_with_hostname(&hosts, name) {
        if let Err(e) = fs_err::write("/etc/hosts", updated) {
            tracing::warn!(cause = %e, "cannot update /etc/hosts");
        }
    }
}

/// `/etc/hosts` with localhost and `name` resolvable, or `None` if it already is.
fn hosts_with_hostname(hosts: &str, name: &str) -> Option<String> {
    let names = |want: &str| {
        hosts.lines().any(|l| {
            let l = l.split('#').next().unwrap_or("");
            l.split_whitespace().skip(1).any(|n| n == want)
        })
    };
    let mut out = hosts.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    if !names("localhost") {
        out.push_str("127.0.0.1\tlocalhost\n");
    }
    if !names(name) {
        out.push_str(&format!("127.0.1.1\t{name}\n"));
    }
    (out != hosts).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_is_added_to_hosts() {
        let got = hosts_with_hostname("127.0.0.1 localhost\n", "web");

        assert_eq!(
            got.as_deref(),
            Some("127.0.0.1 localhost\n127.0.1.1\tweb\n")
        );
    }

    #[test]
    fn hosts_that_already_name_the_host_are_left_alone() {
        assert_eq!(
            hosts_with_hostname("127.0.0.1 localhost\n127.0.1.1 web\n", "web"),
            None
        );
    }

    #[test]
    fn empty_hosts_gets_both_lines() {
        let got = hosts_with_hostname("", "web");

        assert_eq!(
            got.as_deref(),
            Some("127.0.0.1\tlocalhost\n127.0.1.1\tweb\n")
        );
    }
}
