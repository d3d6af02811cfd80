//! A VM's default user (`vm create --user`) beyond exec: `vm ssh` logs in as it (its key
//! authorized in its own home on first use, `--user` to log in as another), and `vm cp`
//! copies as it, relative guest paths starting at its home.

#[test]
fn ssh_logs_in_as_the_default_user() {
    let Some(h) = banger_e2e::turn("ssh_logs_in_as_the_default_user") else {
        return;
    };
    let vm = h.create("sshuser", &["--user", "dev"]);
    let script = "id -un; stat -c '%U %a' ~/.ssh ~/.ssh/authorized_keys";

    let default = h.ok(&["vm", "ssh", vm.name(), "--", "sh", "-c", script]);
    let root = h.ok(&["vm", "ssh", "--user", "root", vm.name(), "--", "id", "-un"]);
    let other = h.ok(&[
        "vm",
        "ssh",
        "--user",
        "ci:1600",
        vm.name(),
        "--",
        "id",
        "-u",
    ]);
    let config = h.ok(&["vm", "ssh-config", vm.name()]);

    assert_eq!(default, "dev\ndev 700\ndev 600");
    assert_eq!(root, "root");
    assert_eq!(other, "1600");
    assert!(config.lines().any(|l| l == "  User dev"), "{config}");
}

#[test]
fn cp_relative_paths_start_at_the_users_home_default_or_given() {
    let Some(h) = banger_e2e::turn("cp_relative_paths_start_at_the_users_home_default_or_given")
    else {
        return;
    };
    let vm = h.create("cpuser", &["--user", "dev"]);
    let local = h.run_dir.join("cp-user.txt");
    fs_err::write(&local, "for dev\n").unwrap();
    let back = h.run_dir.join("cp-user-back.txt");

    h.ok(&[
        "vm",
        "cp",
        local.to_str().unwrap(),
        &format!("{}:notes.txt", vm.name()),
    ]);
    let landed = vm.sh("stat -c '%U %n' /home/dev/notes.txt");
    h.ok(&[
        "vm",
        "cp",
        &format!("{}:notes.txt", vm.name()),
        back.to_str().unwrap(),
    ]);

    assert_eq!(landed, "dev /home/dev/notes.txt");
    assert_eq!(fs_err::read_to_string(&back).unwrap(), "for dev\n");

    // As another user: its own home, its own rights.
    let as_dev = h.banger(&[
        "vm",
        "cp",
        local.to_str().unwrap(),
        &format!("{}:/root/no.txt", vm.name()),
    ]);
    h.ok(&[
        "vm",
        "cp",
        "--user",
        "root",
        local.to_str().unwrap(),
        &format!("{}:as-root.txt", vm.name()),
    ]);
    let as_root = h.ok(&[
        "vm",
        "exec",
        "--user",
        "root",
        vm.name(),
        "--",
        "stat",
        "-c",
        "%U %n",
        "/root/as-root.txt",
    ]);

    assert_ne!(as_dev.code, 0, "dev wrote into /root");
    assert_eq!(as_root.trim(), "root /root/as-root.txt");
}
