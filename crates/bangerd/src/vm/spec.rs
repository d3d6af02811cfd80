//! Validation of what users ask for, before anything is created.

use crate::error::DaemonError;
use crate::image::MAX_DISK_MIB;

pub const MAX_VCPU: u32 = 32;
pub const MIN_MEMORY_MIB: u32 = 128;
pub const MIN_DISK_MIB: u64 = 64;

/// VM names are DNS labels: they become `<name>.vm` host names.
pub fn validate_name(name: &str) -> Result<(), DaemonError> {
    validate_label("vm", name)
}

/// A DNS label (1-63 lowercase letters, digits and `-`, no `-` at either end), the rule
/// for every name typed on banger's command line; `what` names the thing in the error.
pub fn validate_label(what: &str, name: &str) -> Result<(), DaemonError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        return Ok(());
    }
    Err(DaemonError::Invalid {
        message: format!("invalid {what} name {name:?}"),
        hint: Some(
            "use 1-63 lowercase letters, digits and '-', not starting or ending with '-'".into(),
        ),
    })
}

/// Checks vCPUs, memory (at most this host's RAM) and disk size against their bounds.
pub fn validate_resources(vcpu: u32, memory_mib: u32, disk_mib: u64) -> Result<(), DaemonError> {
    check_resources(vcpu, memory_mib, disk_mib, host_memory_mib())
}

/// `MemTotal` of `/proc/meminfo` in MiB; `None` when it cannot be read.
fn host_memory_mib() -> Option<u64> {
    let text = fs_err::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

fn check_resources(
    vcpu: u32,
    memory_mib: u32,
    disk_mib: u64,
    host_memory_mib: Option<u64>,
) -> Result<(), DaemonError> {
    if vcpu == 0 || vcpu > MAX_VCPU {
        return Err(DaemonError::Invalid {
            message: format!("invalid vcpu count {vcpu}"),
            hint: Some(format!("use --vcpu between 1 and {MAX_VCPU}")),
        });
    }
    if memory_mib < MIN_MEMORY_MIB {
        return Err(DaemonError::Invalid {
            message: format!("memory of {memory_mib} MiB is too small to boot"),
            hint: Some(format!("use --memory {MIN_MEMORY_MIB} or more (MiB)")),
        });
    }
    if let Some(host) = host_memory_mib.filter(|&h| u64::from(memory_mib) > h) {
        return Err(DaemonError::Invalid {
            message: format!("memory of {memory_mib} MiB is more than this host's {host} MiB"),
            hint: Some(format!(
                "use --memory between {MIN_MEMORY_MIB} and {host} (MiB)"
            )),
        });
    }
    if disk_mib < MIN_DISK_MIB {
        return Err(DaemonError::Invalid {
            message: format!("disk size of {disk_mib} MiB is too small"),
            hint: Some(format!("use --disk-size {MIN_DISK_MIB} or more (MiB)")),
        });
    }
    if disk_mib > MAX_DISK_MIB {
        return Err(DaemonError::Invalid {
            message: format!("disk size of {disk_mib} MiB is too large"),
            hint: Some(format!(
                "use --disk-size between {MIN_DISK_MIB} and {MAX_DISK_MIB} (MiB, 16 TiB)"
            )),
        });
    }
    Ok(())
}

/// A fresh name like `vm-3fa9c2` for unnamed VMs.
/// Each `--publish HOST:GUEST[/udp]` parses.
pub fn validate_publish(publish: &[String]) -> Result<(), DaemonError> {
    for p in publish {
        p.parse::<crate::net::PortForward>()
            .map_err(|e| DaemonError::Invalid {
                message: format!("invalid --publish {p:?}: {e}"),
                hint: Some("use HOST:GUEST or HOST:GUEST/udp, e.g. --publish 8080:80".into()),
            })?;
    }
    Ok(())
}

/// A VM without a network takes no network policy: a flag that would do nothing is
/// refused rather than ignored.
pub fn check_policy_without_network(
    policy: &banger_wire::api::NetPolicy,
) -> Result<(), DaemonError> {
    if *policy == banger_wire::api::NetPolicy::default() {
        return Ok(());
    }
    Err(DaemonError::Invalid {
        message: "network policy flags need a network".into(),
        hint: Some(
            "drop --no-network, or drop --net, --net-group, --allow-host, --allow and --egress-allow"
                .into(),
        ),
    })
}

pub fn generate_name() -> String {
    format!("vm-{}", hex::encode(rand::random::<[u8; 3]>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_are_accepted() {
        for n in ["web", "a", "build-42", &"x".repeat(63)] {
            assert!(validate_name(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn non_labels_are_refused() {
        for n in ["", "-a", "a-", "Web", "a_b", "a.b", "ü", &"x".repeat(64)] {
            assert!(validate_name(n).is_err(), "{n:?}");
        }
    }

    #[test]
    fn resource_bounds() {
        assert!(validate_resources(0, 512, 1024).is_err());
        assert!(validate_resources(1, 1, 1024).is_err());
        assert!(validate_resources(1, 512, 1).is_err());
        assert!(validate_resources(2, 512, 1024).is_ok());
    }

    #[test]
    fn resource_upper_bounds() {
        let host = Some(8192);
        let disk = check_resources(2, 512, 17592186044417, host).unwrap_err();
        let memory = check_resources(2, 8193, 1024, host).unwrap_err();
        let vcpu = check_resources(MAX_VCPU + 1, 512, 1024, host).unwrap_err();

        assert_eq!(
            disk.to_string(),
            "disk size of 17592186044417 MiB is too large"
        );
        assert_eq!(
            disk.hint().unwrap(),
            "use --disk-size between 64 and 16777216 (MiB, 16 TiB)"
        );
        assert_eq!(
            memory.hint().unwrap(),
            "use --memory between 128 and 8192 (MiB)"
        );
        assert_eq!(vcpu.hint().unwrap(), "use --vcpu between 1 and 32");
        assert!(check_resources(2, 8192, MAX_DISK_MIB, host).is_ok());
    }

    #[test]
    fn host_memory_is_read() {
        assert!(host_memory_mib().is_some_and(|m| m > 0));
    }

    #[test]
    fn policy_flags_without_a_network_are_refused() {
        use banger_wire::api::NetPolicy;
        assert!(check_policy_without_network(&NetPolicy::default()).is_ok());
        let asked = NetPolicy {
            allow_host: vec!["80".into()],
            ..NetPolicy::default()
        };
        let err = check_policy_without_network(&asked).unwrap_err();
        assert!(err.to_string().contains("need a network"), "{err}");
    }

    #[test]
    fn generated_names_are_valid() {
        assert!(validate_name(&generate_name()).is_ok());
    }
}
