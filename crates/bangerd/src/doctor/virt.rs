//! Virtualisation checks: KVM, the firecracker binary, QEMU.

use banger_wire::api::Backend;

use super::{apt, Check, Ctx, COMMAND_TIMEOUT};
use crate::host::{run_command, KvmStatus, FIRECRACKER_ENV, JAILER_ENV};

const FIRECRACKER_INSTALL: &str = "v=$(basename $(curl -fsSLI -o /dev/null -w '%{url_effective}' \
https://github.com/firecracker-microvm/firecracker/releases/latest)) && \
curl -fsSL https://github.com/firecracker-microvm/firecracker/releases/download/$v/firecracker-$v-x86_64.tgz \
| tar -xz && install release-$v-x86_64/firecracker-$v-x86_64 /usr/local/bin/firecracker";

/// `/dev/kvm` access, and whether a guest can really run on it.
pub(super) fn kvm(ctx: &Ctx<'_>) -> Check {
    const NAME: &str = "/dev/kvm";
    let wants_fc = ctx.config.backend == Some(Backend::Firecracker);
    // Without KVM, only a configured Firecracker backend is broken; QEMU falls back to TCG.
    let bad = |detail: String, fix: String| {
        if wants_fc {
            Check::fail(
                "kvm",
                NAME,
                format!("{detail}; backend = \"firecracker\" is configured but needs KVM"),
                fix,
            )
        } else {
            Check::warn(
                "kvm",
                NAME,
                format!("{detail}; banger uses QEMU with TCG (slow)"),
                fix,
            )
        }
    };
    let use_qemu = format!(
        "sed -i 's/^backend *=.*/backend = \"qemu\"/' {}",
        ctx.paths.config_file().display()
    );
    match ctx.host.kvm_status() {
        KvmStatus::Usable => Check::pass("kvm", NAME, "read-write, hardware virtualization"),
        KvmStatus::Nested { reason } => Check::warn(
            "kvm",
            NAME,
            format!("KVM is nested: {reason}; guests run, but slower than on bare metal"),
            "# nothing to fix here; run banger on bare metal for full speed",
        ),
        KvmStatus::Emulated { reason } => {
            let detail = format!("KVM is nested/emulated ({reason}): guests cannot run on it");
            let fix = if wants_fc {
                use_qemu
            } else {
                "# nothing to fix on this host: QEMU/TCG runs the VMs; \
                 use a host with VMX/SVM for KVM speed"
                    .to_owned()
            };
            bad(detail, fix)
        }
        KvmStatus::Missing { reason } => bad(
            reason,
            "modprobe kvm_intel 2>/dev/null || modprobe kvm_amd  # and enable VT-x/AMD-V in firmware"
                .to_owned(),
        ),
        KvmStatus::NoAccess { reason } => bad(reason, no_access_fix(ctx)),
    }
}

fn no_access_fix(ctx: &Ctx<'_>) -> String {
    let dev = ctx.host.path("/dev/kvm");
    let group = fs_err::metadata(&dev).ok().and_then(|m| {
        use std::os::unix::fs::MetadataExt;
        nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(m.gid()))
            .ok()
            .flatten()
            .map(|g| g.name)
    });
    match group {
        Some(g) if g != "root" => format!("sudo usermod -aG {g} \"$USER\"  # then log in again"),
        _ => "sudo setfacl -m u:\"$USER\":rw /dev/kvm".to_owned(),
    }
}

/// The firecracker binary and its version. Missing is only a warning: QEMU works.
pub(super) fn firecracker(ctx: &Ctx<'_>) -> Check {
    const NAME: &str = "firecracker";
    let needed = ctx.backend == Backend::Firecracker;
    let Some(bin) = ctx.host.firecracker() else {
        let detail = match &ctx.host.firecracker_env {
            Some(p) => format!(
                "{FIRECRACKER_ENV}={} is not an executable file",
                p.display()
            ),
            None => "not found on PATH".to_owned(),
        };
        return if needed {
            Check::fail(
                "firecracker",
                NAME,
                format!("{detail}; backend = \"firecracker\" is configured"),
                FIRECRACKER_INSTALL,
            )
        } else {
            Check::warn(
                "firecracker",
                NAME,
                format!("{detail}; VMs use QEMU"),
                FIRECRACKER_INSTALL,
            )
        };
    };
    match run_command(&bin, &["--version"], COMMAND_TIMEOUT) {
        Ok(out) if out.status.success() => {
            let version = out.first_line().trim_start_matches("Firecracker ");
            let unused = if ctx.backend == Backend::Firecracker {
                ""
            } else if ctx.host.kvm_status().runs_guests() {
                " (unused: backend is qemu)"
            } else {
                " (unused: KVM cannot run guests here)"
            };
            Check::pass(
                "firecracker",
                NAME,
                format!("{version} at {}{unused}", bin.display()),
            )
        }
        Ok(out) => broken_binary(
            "firecracker",
            NAME,
            &bin,
            out.first_line(),
            needed,
            FIRECRACKER_INSTALL,
        ),
        Err(e) => broken_binary(
            "firecracker",
            NAME,
            &bin,
            &e.to_string(),
            needed,
            FIRECRACKER_INSTALL,
        ),
    }
}

/// Firecracker's jailer. Without it firecracker runs as root, unconfined: a warning,
/// since VMs still work.
pub(super) fn jailer(ctx: &Ctx<'_>) -> Check {
    const NAME: &str = "jailer";
    let Some(firecracker) = ctx.host.firecracker() else {
        return Check::pass("jailer", NAME, "unused: no firecracker");
    };
    let Some(jailer) = ctx.host.jailer(&firecracker) else {
        let detail = match &ctx.host.jailer_env {
            Some(p) => format!("{JAILER_ENV}={} is not an executable file", p.display()),
            None => format!("no jailer beside {}", firecracker.display()),
        };
        let beside = firecracker.with_file_name("jailer");
        return Check::warn(
            "jailer",
            NAME,
            format!("{detail}; firecracker runs as root without chroot or seccomp"),
            format!(
                "# install the jailer of the same firecracker release as {} \
                 (or set {JAILER_ENV})",
                beside.display()
            ),
        );
    };
    // Whether its user exists is the `vmm_user` row's.
    Check::pass(
        "jailer",
        NAME,
        format!(
            "{} (firecracker runs jailed, as the VMM user)",
            jailer.display()
        ),
    )
}

/// qemu-system-x86_64 and its version; required when QEMU is the backend.
pub(super) fn qemu(ctx: &Ctx<'_>) -> Check {
    const NAME: &str = "qemu-system-x86_64";
    let needed = ctx.backend == Backend::Qemu;
    let fix = apt("qemu-system-x86");
    let Some(bin) = ctx.host.which(NAME) else {
        return if needed {
            Check::fail(
                "qemu",
                NAME,
                "not found on PATH; QEMU is the backend for new VMs",
                fix,
            )
        } else {
            Check::warn(
                "qemu",
                NAME,
                "not found on PATH; only needed for backend = \"qemu\"",
                fix,
            )
        };
    };
    match run_command(&bin, &["--version"], COMMAND_TIMEOUT) {
        Ok(out) if out.status.success() => {
            let line = out.first_line();
            let version = line.strip_prefix("QEMU emulator version ").unwrap_or(line);
            Check::pass(
                "qemu",
                NAME,
                format!(
                    "{version} at {} (accel {})",
                    bin.display(),
                    ctx.host.qemu_accel()
                ),
            )
        }
        Ok(out) => broken_binary("qemu", NAME, &bin, out.first_line(), needed, &fix),
        Err(e) => broken_binary("qemu", NAME, &bin, &e.to_string(), needed, &fix),
    }
}

fn broken_binary(
    id: &'static str,
    name: &str,
    bin: &std::path::Path,
    why: &str,
    needed: bool,
    fix: &str,
) -> Check {
    let detail = format!("{} --version failed: {why}", bin.display());
    if needed {
        Check::fail(id, name, detail, fix)
    } else {
        Check::warn(id, name, detail, fix)
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::doctor::testing::fake_host;
    use crate::doctor::Status;
    use banger_host::config::{Config, Paths};

    #[test]
    fn kvm_pvm_warns_and_names_tcg() {
        let t = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(t.path().join("dev")).unwrap();
        fs_err::write(t.path().join("dev/kvm"), "").unwrap();
        fs_err::create_dir_all(t.path().join("sys/module/kvm_pvm")).unwrap();
        let (host, paths, config) = (
            fake_host(t.path()),
            Paths::under(t.path()),
            Config::default(),
        );

        let check = kvm(&Ctx::new(&host, &paths, &config));

        assert_eq!(check.status, Status::Warn);
        assert_eq!(
            check.detail,
            "KVM is nested/emulated (kvm_pvm): guests cannot run on it; banger uses QEMU with TCG (slow)"
        );
        assert!(check.fix.is_some());
    }

    #[test]
    fn missing_kvm_warns_but_fails_when_firecracker_is_configured() {
        let t = tempfile::tempdir().unwrap();
        let (host, paths) = (fake_host(t.path()), Paths::under(t.path()));
        let fc = Config {
            backend: Some(Backend::Firecracker),
            ..Config::default()
        };

        let default = kvm(&Ctx::new(&host, &paths, &Config::default()));
        let configured = kvm(&Ctx::new(&host, &paths, &fc));

        assert_eq!(default.status, Status::Warn);
        assert_eq!(configured.status, Status::Fail);
    }

    #[test]
    fn a_firecracker_without_a_jailer_warns_and_says_where_it_goes() {
        let t = tempfile::tempdir().unwrap();
        let (host, paths, config) = (
            fake_host(t.path()),
            Paths::under(t.path()),
            Config::default(),
        );
        crate::test_support::write_script(&t.path().join("bin/firecracker"), "#!/bin/sh\n");

        let check = jailer(&Ctx::new(&host, &paths, &config));

        assert_eq!(check.status, Status::Warn);
        assert_eq!(
            check.detail,
            format!(
                "no jailer beside {}; firecracker runs as root without chroot or seccomp",
                t.path().join("bin/firecracker").display()
            )
        );
        let fix = check.fix.unwrap();
        assert!(
            fix.contains(&*t.path().join("bin/jailer").to_string_lossy()),
            "{fix}"
        );
        assert!(fix.contains("BANGER_JAILER"), "{fix}");
    }

    #[test]
    fn the_jailer_is_not_needed_without_firecracker() {
        let t = tempfile::tempdir().unwrap();
        let (host, paths, config) = (
            fake_host(t.path()),
            Paths::under(t.path()),
            Config::default(),
        );

        let check = jailer(&Ctx::new(&host, &paths, &config));

        assert_eq!(
            (check.status, check.detail.as_str()),
            (Status::Pass, "unused: no firecracker")
        );
    }

    #[test]
    fn firecracker_version_from_binary_and_missing_is_warn() {
        let t = tempfile::tempdir().unwrap();
        let (host, paths, config) = (
            fake_host(t.path()),
            Paths::under(t.path()),
            Config::default(),
        );
        let missing = firecracker(&Ctx::new(&host, &paths, &config));
        let bin = t.path().join("bin/firecracker");
        crate::test_support::write_script(
            &bin,
            "#!/bin/sh\necho 'Firecracker v1.9.1'\necho\necho 'Supported snapshot versions'\n",
        );

        let found = firecracker(&Ctx::new(&host, &paths, &config));

        assert_eq!(missing.status, Status::Warn);
        assert_eq!(missing.fix.as_deref(), Some(FIRECRACKER_INSTALL));
        assert_eq!(found.status, Status::Pass);
        assert_eq!(
            found.detail,
            format!(
                "v1.9.1 at {} (unused: KVM cannot run guests here)",
                bin.display()
            )
        );
    }

    #[test]
    fn missing_qemu_fails_when_it_is_the_backend() {
        let t = tempfile::tempdir().unwrap();
        let (host, paths, config) = (
            fake_host(t.path()),
            Paths::under(t.path()),
            Config::default(),
        );

        let check = qemu(&Ctx::new(&host, &paths, &config));

        assert_eq!(check.status, Status::Fail);
        assert_eq!(
            check.fix.as_deref(),
            Some("apt-get install -y qemu-system-x86")
        );
    }
}
