//! Host tools banger shells out to: mkfs.ext4, git, the ssh client.

use super::{apt, Check, Ctx, Status, COMMAND_TIMEOUT};
use crate::host::run_command;

/// A tool banger runs, and what its absence costs.
struct Tool {
    id: &'static str,
    binary: &'static str,
    version_arg: &'static str,
    package: &'static str,
    /// Status when the tool is missing.
    missing: Status,
    /// What stops working without it.
    needed_for: &'static str,
}

/// mkfs.ext4 formats every VM's writable disk, so it is required.
pub(super) fn mkfs_ext4(ctx: &Ctx<'_>) -> Check {
    probe(
        ctx,
        &Tool {
            id: "mkfs_ext4",
            binary: "mkfs.ext4",
            version_arg: "-V",
            package: "e2fsprogs",
            missing: Status::Fail,
            needed_for: "VM disks cannot be created",
        },
    )
}

pub(super) fn git(ctx: &Ctx<'_>) -> Check {
    probe(
        ctx,
        &Tool {
            id: "git",
            binary: "git",
            version_arg: "--version",
            package: "git",
            missing: Status::Warn,
            needed_for: "`banger workspace` cannot copy repositories",
        },
    )
}

pub(super) fn ssh(ctx: &Ctx<'_>) -> Check {
    probe(
        ctx,
        &Tool {
            id: "ssh",
            binary: "ssh",
            version_arg: "-V",
            package: "openssh-client",
            missing: Status::Warn,
            needed_for: "`banger vm ssh` does not work",
        },
    )
}

fn probe(ctx: &Ctx<'_>, tool: &Tool) -> Check {
    let fix = apt(tool.package);
    let verdict = |detail: String| match tool.missing {
        Status::Fail => Check::fail(tool.id, tool.binary, detail, fix.clone()),
        _ => Check::warn(tool.id, tool.binary, detail, fix.clone()),
    };
    let Some(bin) = ctx.host.which(tool.binary) else {
        return verdict(format!("not found on PATH; {}", tool.needed_for));
    };
    match run_command(&bin, &[tool.version_arg], COMMAND_TIMEOUT) {
        Ok(out) if out.status.success() => Check::pass(
            tool.id,
            tool.binary,
            format!("{} at {}", out.first_line(), bin.display()),
        ),
        Ok(out) => verdict(format!(
            "{} {} failed: {}",
            bin.display(),
            tool.version_arg,
            out.first_line()
        )),
        Err(e) => verdict(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::testing::fake_host;
    use crate::test_support::write_script;
    use banger_host::config::{Config, Paths};

    #[test]
    fn missing_mkfs_fails_and_missing_ssh_warns() {
        let t = tempfile::tempdir().unwrap();
        let (host, paths, config) = (
            fake_host(t.path()),
            Paths::under(t.path()),
            Config::default(),
        );
        let ctx = Ctx::new(&host, &paths, &config);

        let mkfs = mkfs_ext4(&ctx);
        let ssh = ssh(&ctx);

        assert_eq!(mkfs.status, Status::Fail);
        assert_eq!(mkfs.fix.as_deref(), Some("apt-get install -y e2fsprogs"));
        assert_eq!(ssh.status, Status::Warn);
        assert_eq!(
            ssh.fix.as_deref(),
            Some("apt-get install -y openssh-client")
        );
    }

    #[test]
    fn version_is_read_from_stderr() {
        let t = tempfile::tempdir().unwrap();
        let bin = t.path().join("bin/ssh");
        write_script(&bin, "#!/bin/sh\necho 'OpenSSH_9.2p1 Debian-2' >&2\n");
        let (host, paths, config) = (
            fake_host(t.path()),
            Paths::under(t.path()),
            Config::default(),
        );

        let check = ssh(&Ctx::new(&host, &paths, &config));

        assert_eq!(check.status, Status::Pass);
        assert_eq!(
            check.detail,
            format!("OpenSSH_9.2p1 Debian-2 at {}", bin.display())
        );
    }
}
