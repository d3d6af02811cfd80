//! `bangerd doctor`, the report `banger doctor` prints: it probes this host (read-only,
//! about a second) and never starts a daemon.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

/// `bangerd ARGS` with every banger directory under a fresh temporary root, and
/// `config` as its `config.toml`.
fn bangerd(args: &[&str], config: &str) -> Output {
    let root = tempfile::tempdir().unwrap();
    let config_dir = root.path().join("config");
    fs_err::create_dir_all(&config_dir).unwrap();
    fs_err::write(config_dir.join("config.toml"), config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_bangerd"))
        .args(args)
        .env("BANGER_CONFIG_DIR", &config_dir)
        .env("BANGER_STATE_DIR", root.path().join("state"))
        .env("BANGER_CACHE_DIR", root.path().join("cache"))
        .env("BANGER_RUNTIME_DIR", root.path().join("run"))
        .env_remove("BANGER_SOCKET")
        .output()
        .unwrap()
}

#[test]
fn json_report_parses_and_a_failed_check_exits_1() {
    let out = bangerd(&["doctor", "--json"], "dns_listen = \"nope\"\n");

    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dns = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "dns_port")
        .unwrap();
    assert_eq!(dns["status"], "fail", "{dns}");
    assert!(dns["fix"].as_str().unwrap().contains("dns_listen"), "{dns}");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn table_without_color_has_no_escapes_and_ends_with_the_counts() {
    let out = bangerd(&["doctor"], "dns_listen = \"nope\"\n");

    let table = String::from_utf8(out.stdout).unwrap();
    assert!(!table.contains('\x1b'), "{table}");
    assert!(table.contains("FAIL  udp nope"), "{table}");
    assert!(
        table.trim_end().lines().last().unwrap().contains(" fail"),
        "{table}"
    );
}

#[test]
fn an_unknown_argument_is_a_usage_error_not_a_daemon_start() {
    let out = bangerd(&["doctor", "--jsn"], "");

    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: bangerd"));
}
