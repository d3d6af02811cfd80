//! `--user NAME[:UID]`: commands as a non-root guest user, created on first use, with
//! the shipped workspace owned by it; bad names refused before any VM exists.

use banger_e2e::repo::{sh_in, ws_repo};
use banger_e2e::TestVm;

#[test]
fn user_run() {
    let Some(h) = banger_e2e::turn("user_run") else {
        return;
    };

    let name = h.ok(&["vm", "run", "--rm", "--user", "dev", "--", "id", "-un"]);
    let env = h.ok(&[
        "vm",
        "run",
        "--rm",
        "--user",
        "dev",
        "--",
        "sh",
        "-c",
        "echo $HOME $USER $LOGNAME; pwd; id -G | wc -w; touch /root/x 2>/dev/null || echo denied",
    ]);

    assert_eq!(name, "dev");
    assert_eq!(env, "/home/dev dev dev\n/home/dev\n1\ndenied");
    assert_eq!(h.vms(), vec![]);
}

#[test]
fn user_repo_is_owned() {
    let Some(h) = banger_e2e::turn("user_repo_is_owned") else {
        return;
    };
    let r = h.run_dir.join("userrepo");
    ws_repo(&r);
    let status = "git status --porcelain --untracked-files=no";
    let probe = format!("pwd; find . ! -user dev | wc -l; stat -c %U .git/HEAD; {status}");

    let out = h.ok(&[
        "vm",
        "run",
        "--rm",
        "--user",
        "dev",
        r.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &probe,
    ]);

    // git works for dev there, and sees the host's uncommitted changes.
    let want = format!("/home/dev/repo\n0\ndev\n{}", sh_in(&r, status));
    assert_eq!(out, want);
}

#[test]
fn user_default_of_a_vm() {
    let Some(h) = banger_e2e::turn("user_default_of_a_vm") else {
        return;
    };
    let r = h.run_dir.join("userws");
    ws_repo(&r);
    let vm = h.create("user", &["--user", "dev:1500"]);

    let as_default = vm.exec(&["sh", "-c", "id -un; id -u"]).success().text();
    let as_root = h.ok(&["vm", "exec", vm.name(), "--user", "root", "--", "id", "-un"]);
    let pinned = h.ok(&[
        "vm",
        "exec",
        vm.name(),
        "--user",
        "ci:1600",
        "--",
        "id",
        "-u",
    ]);
    let shown = vm.info().user.map(|u| u.to_string());
    h.ok(&["workspace", "prepare", vm.name(), r.to_str().unwrap()]);
    vm.sh("echo guest-edit >>/home/dev/repo/tracked.txt");
    let patch = h.ok(&["workspace", "export", vm.name()]);

    assert_eq!(as_default, "dev\n1500");
    assert_eq!(as_root, "root");
    assert_eq!(pinned, "1600");
    assert_eq!(shown.as_deref(), Some("dev:1500"));
    assert!(patch.contains("+guest-edit"), "{patch}");
}

#[test]
fn user_bad_name_leaves_nothing() {
    let Some(h) = banger_e2e::turn("user_bad_name_leaves_nothing") else {
        return;
    };
    let name = h.name("baduser");
    let _vm = TestVm::new(&h, name.clone());

    let run = h.banger(&["vm", "run", "--rm", "--user", "Dev", "--", "true"]);
    let create = h.banger(&["vm", "create", &name, "--user", "dev:0"]);
    let taken = h.banger(&["vm", "run", "--rm", "--user", "nobody:1", "--", "true"]);

    run.failure(Some(2), "invalid user name \"Dev\"");
    run.failure(Some(2), "hint: give NAME or NAME:UID");
    create.failure(Some(2), "UID 0 is root's alone");
    // A valid name whose UID the guest disagrees with: refused by the agent, and the
    // --rm VM is gone all the same.
    taken.failure(
        Some(6),
        "user nobody exists in the guest with UID 65534, not 1",
    );
    assert_eq!(h.vms(), vec![]);
}

#[test]
fn user_image_build() {
    let Some(h) = banger_e2e::turn("user_image_build") else {
        return;
    };
    let image = h.name("userimg");
    let refused = h.banger(&["image", "build", &image, "--sudo"]);

    let built = h.banger(&[
        "image", "build", &image, "--user", "dev:1234", "--sudo", "--size", "2048M",
    ]);
    let probe = "id -un; id -u; sudo -n id -un; stat -c %U /home/dev";
    let ran = h.banger(&[
        "vm", "run", "--rm", "--image", &image, "--user", "dev", "--", "sh", "-c", probe,
    ]);
    h.banger(&["image", "delete", &image]);

    refused.failure(Some(2), "--user");
    built.success();
    assert_eq!(ran.success().text(), "dev\n1234\nroot\ndev");
}
