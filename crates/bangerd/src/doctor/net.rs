//! Network checks: the tun device, nftables and IPv4 forwarding.

use rustix::fs::{Access, AtFlags};

use banger_wire::api::NetMode;

use super::{apt, Check, Ctx, COMMAND_TIMEOUT};
use crate::host::run_command;

/// `/dev/net/tun` exists and opens read-write (VM taps need it).
pub(super) fn tun(ctx: &Ctx<'_>) -> Check {
    const NAME: &str = "/dev/net/tun";
    let dev = ctx.host.path("/dev/net/tun");
    if !dev.exists() {
        return Check::fail(
            "tun",
            NAME,
            "does not exist; VMs cannot get a tap network",
            "modprobe tun",
        );
    }
    match rustix::fs::accessat(
        rustix::fs::CWD,
        &dev,
        Access::READ_OK | Access::WRITE_OK,
        AtFlags::EACCESS,
    ) {
        Ok(()) => Check::pass("tun", NAME, "read-write"),
        Err(e) if ctx.host.is_root => Check::fail(
            "tun",
            NAME,
            format!("not readable and writable: {e}"),
            "chmod 0666 /dev/net/tun",
        ),
        Err(_) => Check::pass(
            "tun",
            NAME,
            "present (not read-write for this user; bangerd opens it as root)",
        ),
    }
}

/// `nft` is installed and, as root, can list the ruleset (NAT for VMs uses it).
pub(super) fn nftables(ctx: &Ctx<'_>) -> Check {
    const NAME: &str = "nftables";
    let fix = apt("nftables");
    let Some(nft) = ctx.host.which("nft") else {
        return Check::fail(
            "nftables",
            NAME,
            "nft not found on PATH; VMs get no NAT",
            fix,
        );
    };
    let version = match run_command(&nft, &["--version"], COMMAND_TIMEOUT) {
        Ok(out) if out.status.success() => out.first_line().to_owned(),
        Ok(out) => {
            let detail = format!("{} --version failed: {}", nft.display(), out.first_line());
            return Check::fail("nftables", NAME, detail, fix);
        }
        Err(e) => return Check::fail("nftables", NAME, e.to_string(), fix),
    };
    if !ctx.host.is_root {
        return Check::pass(
            "nftables",
            NAME,
            format!("{version} (ruleset not checked: not root)"),
        );
    }
    match run_command(&nft, &["list", "ruleset"], COMMAND_TIMEOUT) {
        Ok(out) if out.status.success() => {
            Check::pass("nftables", NAME, format!("{version}, ruleset readable"))
        }
        Ok(out) => Check::fail(
            "nftables",
            NAME,
            format!("nft list ruleset failed: {}", out.first_line()),
            "modprobe nf_tables",
        ),
        Err(e) => Check::fail("nftables", NAME, e.to_string(), "modprobe nf_tables"),
    }
}

/// The bridge's isolation rules (see `net::isolation`) are installed, and new VMs get
/// the isolated policy.
pub(super) fn isolation(ctx: &Ctx<'_>) -> Check {
    const NAME: &str = "guest isolation";
    if ctx.config.net == NetMode::Open {
        return Check::warn(
            "isolation",
            NAME,
            "config.toml sets net = \"open\": new VMs reach every host service and the LAN",
            "# remove `net = \"open\"` from config.toml (per VM: --net open)",
        );
    }
    if !ctx.host.is_root {
        return Check::pass("isolation", NAME, "rules not checked: not root");
    }
    let Some(nft) = ctx.host.which("nft") else {
        return Check::fail("isolation", NAME, "nft not found on PATH", apt("nftables"));
    };
    let table = crate::net::NftTable::for_bridge(&ctx.config.bridge);
    let chains = [
        ("bridge", "prerouting"),
        ("ip", "input"),
        ("ip", "from_guest"),
    ];
    let missing: Vec<String> = chains
        .iter()
        .filter(|(family, chain)| {
            let args = ["list", "chain", family, table.name(), chain];
            !matches!(run_command(&nft, &args, COMMAND_TIMEOUT), Ok(out) if out.status.success())
        })
        .map(|(family, chain)| format!("{family} {chain}"))
        .collect();
    match missing.as_slice() {
        [] => Check::pass(
            "isolation",
            NAME,
            format!(
                "tables {} (bridge, ip): anti-spoofing, host input and forward filters",
                table.name()
            ),
        ),
        _ => Check::warn(
            "isolation",
            NAME,
            format!(
                "{} of table {} not installed yet (the daemon installs them when it starts)",
                missing.join(", "),
                table.name()
            ),
            "banger daemon start",
        ),
    }
}

/// `net.ipv4.ip_forward`; off is fine because the daemon turns it on when needed.
pub(super) fn ip_forward(ctx: &Ctx<'_>) -> Check {
    const NAME: &str = "ip forwarding";
    const FIX: &str = "sysctl -w net.ipv4.ip_forward=1";
    let path = ctx.host.path("/proc/sys/net/ipv4/ip_forward");
    match fs_err::read_to_string(&path).map(|s| s.trim().to_owned()) {
        Ok(v) if v == "1" => Check::pass("ip_forward", NAME, "net.ipv4.ip_forward = 1"),
        Ok(v) => Check::warn(
            "ip_forward",
            NAME,
            format!("net.ipv4.ip_forward = {v}; enabled by the daemon when a VM needs NAT"),
            FIX,
        ),
        Err(e) => Check::warn("ip_forward", NAME, e.to_string(), FIX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::{testing::fake_host, Status};
    use banger_host::config::{Config, Paths};

    #[test]
    fn ip_forward_off_warns_with_sysctl_fix() {
        let t = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(t.path().join("proc/sys/net/ipv4")).unwrap();
        fs_err::write(t.path().join("proc/sys/net/ipv4/ip_forward"), "0\n").unwrap();
        let (host, paths, config) = (
            fake_host(t.path()),
            Paths::under(t.path()),
            Config::default(),
        );

        let check = ip_forward(&Ctx::new(&host, &paths, &config));

        assert_eq!(check.status, Status::Warn);
        assert_eq!(
            check.detail,
            "net.ipv4.ip_forward = 0; enabled by the daemon when a VM needs NAT"
        );
        assert_eq!(
            check.fix.as_deref(),
            Some("sysctl -w net.ipv4.ip_forward=1")
        );
    }

    #[test]
    fn open_default_policy_warns() {
        let t = tempfile::tempdir().unwrap();
        let config = Config {
            net: NetMode::Open,
            ..Config::default()
        };
        let (host, paths) = (fake_host(t.path()), Paths::under(t.path()));

        let check = isolation(&Ctx::new(&host, &paths, &config));

        assert_eq!(check.status, Status::Warn);
        assert!(check.detail.contains("net = \"open\""), "{}", check.detail);
    }

    #[test]
    fn missing_tun_fails() {
        let t = tempfile::tempdir().unwrap();
        let (host, paths, config) = (
            fake_host(t.path()),
            Paths::under(t.path()),
            Config::default(),
        );

        let check = tun(&Ctx::new(&host, &paths, &config));

        assert_eq!(check.status, Status::Fail);
        assert_eq!(check.fix.as_deref(), Some("modprobe tun"));
    }

    #[test]
    fn missing_nft_fails_with_apt_fix() {
        let t = tempfile::tempdir().unwrap();
        let (host, paths, config) = (
            fake_host(t.path()),
            Paths::under(t.path()),
            Config::default(),
        );

        let check = nftables(&Ctx::new(&host, &paths, &config));

        assert_eq!(check.status, Status::Fail);
        assert_eq!(check.fix.as_deref(), Some("apt-get install -y nftables"));
    }
}
