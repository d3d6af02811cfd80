//! The one-shot round trip: `vm run PATH --export FILE` / `--apply` bring the
//! command's changes back after it ends, whatever its exit code, through the same guard
//! as `workspace export --apply`.

use std::path::Path;

use banger_e2e::repo::{git, sh_in};
use banger_e2e::TestVm;

/// A repository with one committed file, `f.txt` = "v1".
fn v1_repo(r: &Path) {
    if r.exists() {
        fs_err::remove_dir_all(r).unwrap();
    }
    fs_err::create_dir_all(r).unwrap();
    git(r, &["init", "-q", "-b", "main"]);
    git(r, &["config", "user.email", "smoke@banger.test"]);
    git(r, &["config", "user.name", "smoke"]);
    fs_err::write(r.join("f.txt"), "v1\n").unwrap();
    git(r, &["add", "-A"]);
    git(r, &["commit", "-qm", "v1"]);
}

/// Every entry below `.` with its metadata, and every file's hash.
const SNAP: &str = "find . -print0 | LC_ALL=C sort -z | xargs -0 ls -ld --time-style=+%s.%N
  find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum";

#[test]
fn run_export() {
    let Some(h) = banger_e2e::turn("run_export") else {
        return;
    };
    let r = h.run_dir.join("rtexp");
    v1_repo(&r);
    let patch = h.run_dir.join("rt.patch");
    let clone = h.run_dir.join("rtclone");

    let out = h.banger(&[
        "vm",
        "run",
        "--rm",
        r.to_str().unwrap(),
        "--export",
        patch.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "echo v2 > f.txt; mkdir -p new; echo fresh > new/untracked.txt",
    ]);

    out.success();
    git(
        &h.run_dir,
        &["clone", "-q", r.to_str().unwrap(), clone.to_str().unwrap()],
    );
    git(&clone, &["apply", patch.to_str().unwrap()]);
    assert_eq!(fs_err::read_to_string(clone.join("f.txt")).unwrap(), "v2\n");
    assert_eq!(
        fs_err::read_to_string(clone.join("new/untracked.txt")).unwrap(),
        "fresh\n"
    );
    // --export alone leaves the working tree alone.
    assert_eq!(fs_err::read_to_string(r.join("f.txt")).unwrap(), "v1\n");
}

#[test]
fn run_apply_after_a_failing_command() {
    let Some(h) = banger_e2e::turn("run_apply_after_a_failing_command") else {
        return;
    };
    let r = h.run_dir.join("rtapply");
    v1_repo(&r);
    let patch = h.run_dir.join("rtapply.patch");
    // Without --rm: the VM stays, and is deleted when the test ends.
    let name = h.name("rtapply");
    let _vm = TestVm::new(&h, name.clone());

    let out = h.banger(&[
        "vm",
        "run",
        "--name",
        &name,
        r.to_str().unwrap(),
        "--apply",
        "--export",
        patch.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "echo v2 > f.txt; echo new > added.txt; exit 3",
    ]);

    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(fs_err::read_to_string(r.join("f.txt")).unwrap(), "v2\n");
    assert_eq!(
        fs_err::read_to_string(r.join("added.txt")).unwrap(),
        "new\n"
    );
    assert!(fs_err::read_to_string(&patch).unwrap().contains("+v2"));
    assert!(out.stderr.contains("applied changes to 2 files"), "{out:?}");
}

#[test]
fn run_apply_after_a_timeout() {
    let Some(h) = banger_e2e::turn("run_apply_after_a_timeout") else {
        return;
    };
    let r = h.run_dir.join("rttime");
    v1_repo(&r);

    let out = h.banger(&[
        "vm",
        "run",
        "--rm",
        "--timeout",
        "5s",
        r.to_str().unwrap(),
        "--apply",
        "--",
        "sh",
        "-c",
        "echo v2 > f.txt; sleep 600",
    ]);

    assert_eq!(out.code, 124, "{out:?}");
    assert_eq!(fs_err::read_to_string(r.join("f.txt")).unwrap(), "v2\n");
}

/// A guest whose git writes a traversal patch.
const EVIL_GIT: &str = r#"cat >/usr/local/bin/git <<"EOF"
#!/bin/sh
case " $* " in *" diff "*)
  printf "diff --git a/../../pwned b/../../pwned\nnew file mode 100644\n--- /dev/null\n+++ b/../../pwned\n@@ -0,0 +1 @@\n+owned\n"
  exit 0;; esac
exec /usr/bin/git "$@"
EOF
chmod 755 /usr/local/bin/git"#;

#[test]
fn run_apply_refuses_a_hostile_patch() {
    let Some(h) = banger_e2e::turn("run_apply_refuses_a_hostile_patch") else {
        return;
    };
    let r = h.run_dir.join("rthost");
    v1_repo(&r);
    let before = sh_in(&r, SNAP);
    let run = |script: &str| {
        h.banger(&[
            "vm",
            "run",
            "--rm",
            r.to_str().unwrap(),
            "--apply",
            "--",
            "sh",
            "-c",
            script,
        ])
    };

    let symlink_out = run("ln -s /etc/passwd pw");
    let traversal = run(EVIL_GIT);

    // The command succeeded, the changes did not come back: the guard's exit code.
    symlink_out.failure(Some(11), "would point outside the repository");
    symlink_out.failure(Some(11), "is as it was");
    traversal.failure(Some(11), "climbs out");
    assert_eq!(sh_in(&r, SNAP), before);
    assert!(!h.run_dir.join("pwned").exists());
    assert!(!h.run_dir.parent().unwrap().join("pwned").exists());
}

#[test]
fn run_export_is_refused_before_a_vm_exists() {
    let Some(h) = banger_e2e::turn("run_export_is_refused_before_a_vm_exists") else {
        return;
    };
    let r = h.run_dir.join("rtbad");
    v1_repo(&r);
    let vms = h.vms().len();
    let nowhere = h.run_dir.join("no/such/dir/out.patch");

    let no_path = h.banger(&["vm", "run", "--rm", "--export", "x.patch", "--", "true"]);
    let apply_no_path = h.banger(&["vm", "run", "--rm", "--apply", "--", "true"]);
    let bad_file = h.banger(&[
        "vm",
        "run",
        "--rm",
        r.to_str().unwrap(),
        "--export",
        nowhere.to_str().unwrap(),
        "--",
        "true",
    ]);

    no_path.failure(Some(2), "<PATH>");
    apply_no_path.failure(Some(2), "<PATH>");
    bad_file.failure(Some(3), "is not a directory");
    assert_eq!(h.vms().len(), vms);
}
