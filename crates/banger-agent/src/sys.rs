//! Small facts about the running guest, read from procfs.

use std::path::Path;

const UPTIME: &str = "/proc/uptime";
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// Milliseconds since kernel start, from `/proc/uptime`; 0 if it cannot be read.
pub fn uptime_ms() -> u64 {
    match fs_err::read_to_string(UPTIME) {
        Ok(text) => parse_uptime_ms(&text).unwrap_or(0),
        Err(e) => {
            tracing::warn!(cause = %e, "cannot read uptime");
            0
        }
    }
}

fn parse_uptime_ms(text: &str) -> Option<u64> {
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some((secs * 1000.0) as u64)
}

/// The kernel's per-boot id (stable across agent restarts within one boot), or a fresh
/// random id when procfs does not offer one.
pub fn boot_id() -> String {
    match fs_err::read_to_string(BOOT_ID) {
        Ok(id) if !id.trim().is_empty() => id.trim().to_string(),
        _ => hex::encode(rand::random::<[u8; 16]>()),
    }
}

/// The kernel command line from `path` (normally `/proc/cmdline`).
pub fn read_cmdline(path: &Path) -> std::io::Result<String> {
    fs_err::read_to_string(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_parses_the_first_field_as_seconds() {
        assert_eq!(parse_uptime_ms("12.34 56.78\n"), Some(12_340));
    }

    #[test]
    fn uptime_rejects_garbage() {
        assert_eq!(parse_uptime_ms("up a while"), None);
    }
}
