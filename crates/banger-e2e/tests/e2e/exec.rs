//! `vm run` and `vm exec`: output, exit codes, argv and stdin as given.

use sha2::{Digest, Sha256};

#[test]
fn bare() {
    let Some(h) = banger_e2e::turn("bare") else {
        return;
    };

    let out = h.ok(&["vm", "run", "--rm", "--", "echo", "smoke-bare-ok"]);

    assert_eq!(out, "smoke-bare-ok");
    assert_eq!(h.vms(), vec![]);
}

#[test]
fn exit_code() {
    let Some(h) = banger_e2e::turn("exit_code") else {
        return;
    };

    let out = h.banger(&["vm", "run", "--rm", "--", "sh", "-c", "exit 42"]);

    assert_eq!(out.code, 42, "{out:?}");
}

#[test]
fn argv_and_signals() {
    let Some(h) = banger_e2e::turn("argv_and_signals") else {
        return;
    };
    let vm = h.create("argv", &[]);

    let printed = vm
        .exec(&["printf", "[%s]", "a b", "c'd", "$HOME", ""])
        .success();
    let killed = vm.exec(&["sh", "-c", "kill -9 $$"]);

    assert_eq!(printed.text(), "[a b][c'd][$HOME][]");
    assert_eq!(killed.code, 137, "{killed:?}");
}

#[test]
fn stdin_50mib() {
    let Some(h) = banger_e2e::turn("stdin_50mib") else {
        return;
    };
    let blob = banger_e2e::repo::random_bytes(50 * 1024 * 1024);
    let vm = h.create("pipe", &[]);

    let out = vm.exec_with_stdin(&["cat"], &blob).success();

    assert_eq!(out.stdout.len(), blob.len());
    assert_eq!(
        hex::encode(Sha256::digest(&out.stdout)),
        hex::encode(Sha256::digest(&blob))
    );
}

#[test]
fn env_file_and_host_values() {
    let Some(h) = banger_e2e::turn("env_file_and_host_values") else {
        return;
    };
    let file = h.run_dir.join("vars.env");
    fs_err::write(
        &file,
        "# docker's format\nFROM_FILE=a b\nOVERRIDDEN=file\nHOST_ONLY\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();

    let mut cmd = h.command();
    cmd.env("HOST_ONLY", "from-host").args([
        "vm",
        "run",
        "--rm",
        "--env-file",
        file,
        "-e",
        "OVERRIDDEN=flag",
        "-e",
        "HOST_ONLY",
        "--",
        "sh",
        "-c",
        "echo \"$FROM_FILE|$OVERRIDDEN|$HOST_ONLY\"",
    ]);
    let out = cmd.output().unwrap();
    let missing = h.banger(&[
        "vm",
        "run",
        "--rm",
        "--env-file",
        "/nonexistent/env",
        "--",
        "true",
    ]);

    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "a b|flag|from-host"
    );
    assert_eq!(missing.code, 3, "{missing:?}");
    assert_eq!(h.vms(), vec![], "a refused run leaves no VM");
}
