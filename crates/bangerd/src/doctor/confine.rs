//! VMM confinement: the unprivileged user QEMU runs as, and QEMU's seccomp sandbox.

use banger_wire::api::Backend;

use super::{Check, Ctx, COMMAND_TIMEOUT};
use crate::host::run_command;
use crate::vmm::qemu::SANDBOX;
use crate::vmm::user::{self, CREATE_VMM_USER, VMM_USER};

/// The VMM user exists (and is not root); required when QEMU is the backend.
pub(super) fn vmm_user(ctx: &Ctx<'_>) -> Check {
    const ID: &str = "vmm_user";
    let name = format!("user {VMM_USER}");
    match user::lookup(&ctx.host.path("/etc/passwd"), VMM_USER) {
        Some(u) => Check::pass(
            ID,
            name,
            format!("uid {} gid {}; QEMU runs as it", u.uid, u.gid),
        ),
        None if ctx.backend == Backend::Qemu => Check::fail(
            ID,
            name,
            "missing (or root); QEMU is never started as root",
            CREATE_VMM_USER,
        ),
        None => Check::warn(
            ID,
            name,
            "missing; only needed for backend = \"qemu\"",
            CREATE_VMM_USER,
        ),
    }
}

/// QEMU accepts `-sandbox` (built with seccomp) and the kernel has seccomp filters.
pub(super) fn qemu_sandbox(ctx: &Ctx<'_>) -> Check {
    const ID: &str = "qemu_sandbox";
    const NAME: &str = "qemu sandbox";
    let needed = ctx.backend == Backend::Qemu;
    let bad = |detail: String, fix: &str| match needed {
        true => Check::fail(ID, NAME, detail, fix),
        false => Check::warn(ID, NAME, detail, fix),
    };
    let status = ctx.host.path("/proc/self/status");
    let kernel = fs_err::read_to_string(&status).unwrap_or_default();
    if !kernel.lines().any(|l| l.starts_with("Seccomp:")) {
        return bad(
            "the kernel has no seccomp (no Seccomp: in /proc/self/status)".into(),
            "# use a kernel built with CONFIG_SECCOMP_FILTER",
        );
    }
    let Some(bin) = ctx.host.which("qemu-system-x86_64") else {
        return bad(
            "qemu-system-x86_64 not found".into(),
            "apt-get install -y qemu-system-x86",
        );
    };
    // `-sandbox` is parsed (and refused without seccomp support) before `-version` exits.
    match run_command(&bin, &["-sandbox", SANDBOX, "-version"], COMMAND_TIMEOUT) {
        Ok(out) if out.status.success() => Check::pass(ID, NAME, format!("-sandbox {SANDBOX}")),
        Ok(out) => bad(
            format!("QEMU refuses -sandbox: {}", out.first_line()),
            "# install a QEMU built with seccomp: apt-get install -y qemu-system-x86",
        ),
        Err(e) => bad(
            format!("cannot run {}: {e}", bin.display()),
            "apt-get install -y qemu-system-x86",
        ),
    }
}
