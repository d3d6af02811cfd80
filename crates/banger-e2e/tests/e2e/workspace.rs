//! Shipping a repository into a guest (`vm run PATH`, `workspace prepare`) and its
//! changes back out (`workspace export`), including from a hostile guest.

use banger_e2e::repo::{git, sh_in, ws_repo, TREE_SUM};
use banger_e2e::TestVm;

#[test]
fn workspace_run() {
    let Some(h) = banger_e2e::turn("workspace_run") else {
        return;
    };
    let r = h.run_dir.join("wsrun");
    ws_repo(&r);
    let name = h.name("wsrun");
    let _vm = TestVm::new(&h, name.clone());
    let probe = format!(
        "cat tracked.txt; git status --porcelain --untracked-files=no; git rev-parse HEAD
         test -e untracked.env || echo no-untracked; test -e build.log || echo no-ignored
         {TREE_SUM}; pwd"
    );

    let out = h.ok(&[
        "vm",
        "run",
        "--rm",
        "--name",
        &name,
        r.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &probe,
    ]);

    // The host, once its untracked and ignored files are gone, must look the same.
    fs_err::remove_file(r.join("untracked.env")).unwrap();
    fs_err::remove_file(r.join("build.log")).unwrap();
    let host = sh_in(&r, &probe);
    let want = host
        .lines()
        .map(|l| {
            if l == r.to_str().unwrap() {
                "/root/repo"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(out, want);
    assert!(out.lines().any(|l| l == "uncommitted"), "{out}");
    h.banger(&["vm", "show", &name]).failure(None, "not found");
}

#[test]
fn workspace_dry_run() {
    let Some(h) = banger_e2e::turn("workspace_dry_run") else {
        return;
    };
    let r = h.run_dir.join("wsdry");
    ws_repo(&r);
    // No daemon may be needed: point at a socket nobody serves and a daemon that cannot run.
    let nobody = h.run_dir.join("nobody.sock");
    let dry_run = |args: &[&str]| {
        let mut cmd = h.command();
        cmd.env("BANGER_SOCKET", &nobody)
            .env("BANGER_DAEMON", "/bin/false")
            .args(["vm", "run", "--dry-run"])
            .args(args);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let want = [
        ".gitignore",
        "blob.bin",
        "dir with space/ünï ☃.txt",
        "link",
        "old.bin",
        "run.sh",
        "staged.txt",
        "tracked.txt",
    ]
    .map(|f| format!("{f}\n"))
    .concat();

    let shipped = dry_run(&["--rm", r.to_str().unwrap(), "--", "true"]);
    let with_untracked = dry_run(&["--include-untracked", r.to_str().unwrap()]);

    assert_eq!(shipped, want);
    assert!(!nobody.exists(), "a daemon was started");
    assert_eq!(with_untracked, format!("{want}untracked.env\n"));
}

#[test]
fn include_untracked() {
    let Some(h) = banger_e2e::turn("include_untracked") else {
        return;
    };
    let r = h.run_dir.join("wsun");
    ws_repo(&r);

    let out = h.ok(&[
        "vm",
        "run",
        "--rm",
        "--include-untracked",
        r.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "cat untracked.env; test -e build.log || echo no-ignored; git status --porcelain",
    ]);

    assert_eq!(
        out,
        "SECRET=1\nno-ignored\n D deleted.txt\nA  staged.txt\n M tracked.txt\n?? untracked.env"
    );
}

#[test]
fn workspace_export() {
    let Some(h) = banger_e2e::turn("workspace_export") else {
        return;
    };
    let r = h.run_dir.join("wsexp");
    ws_repo(&r);
    git(&r, &["add", "-A"]);
    git(&r, &["commit", "-qm", "everything"]);
    let vm = h.create("wsx", &[]);
    h.ok(&["workspace", "prepare", vm.name(), r.to_str().unwrap()]);
    // Edit, add, delete and chmod a text and a binary file; rename a dir; repoint a link.
    vm.exec_in(
        "/root/repo",
        &[
            "sh",
            "-c",
            r#"set -e
            printf "from the guest\n" >>tracked.txt; head -c 300 /dev/urandom >>blob.bin
            printf "new text\n" >new.txt; head -c 2048 /dev/urandom >new.bin
            rm staged.txt old.bin
            chmod 755 tracked.txt blob.bin; chmod 644 run.sh
            mv "dir with space" "moved dir"; ln -sfn run.sh link"#,
        ],
    )
    .success();
    let patch = h.run_dir.join("ws.patch");
    let clone = h.run_dir.join("wsclone");

    h.ok(&[
        "workspace",
        "export",
        vm.name(),
        "-o",
        patch.to_str().unwrap(),
    ]);
    git(
        &h.run_dir,
        &["clone", "-q", r.to_str().unwrap(), clone.to_str().unwrap()],
    );
    git(&clone, &["apply", "--check", patch.to_str().unwrap()]);
    git(&clone, &["apply", patch.to_str().unwrap()]);
    let guest = vm
        .exec_in("/root/repo", &["sh", "-c", TREE_SUM])
        .success()
        .text();

    assert_eq!(sh_in(&clone, TREE_SUM), guest);
    // --apply brings the same changes into the host working tree.
    h.ok(&[
        "workspace",
        "export",
        vm.name(),
        "--apply",
        "--repo",
        r.to_str().unwrap(),
    ]);
    fs_err::remove_file(r.join("build.log")).unwrap();
    assert_eq!(sh_in(&r, TREE_SUM), guest);
}

/// Every entry below `.` with its metadata, and every file's hash.
const SNAP: &str = "find . -print0 | LC_ALL=C sort -z | xargs -0 ls -ld --time-style=+%s.%N
  find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum";

/// A guest whose git writes a traversal patch.
const EVIL_GIT: &str = r#"rm /root/repo/pw; cat >/usr/local/bin/git <<"EOF"
#!/bin/sh
case " $* " in *" diff "*)
  printf "diff --git a/../../pwned b/../../pwned\nnew file mode 100644\n--- /dev/null\n+++ b/../../pwned\n@@ -0,0 +1 @@\n+owned\n"
  exit 0;; esac
exec /usr/bin/git "$@"
EOF
chmod 755 /usr/local/bin/git"#;

/// A guest git that prints a symlink under a mode git reads as a link (120755).
const MODE_GIT: &str = r#"cat >/usr/local/bin/git <<"EOF"
#!/bin/sh
case " $* " in *" diff "*)
  printf "diff --git a/leak b/leak\nnew file mode 120755\n--- /dev/null\n+++ b/leak\n@@ -0,0 +1 @@\n+/etc/shadow\n\\\\ No newline at end of file\n"
  exit 0;; esac
exec /usr/bin/git "$@"
EOF"#;

#[test]
fn workspace_hostile() {
    let Some(h) = banger_e2e::turn("workspace_hostile") else {
        return;
    };
    let r = h.run_dir.join("wshost");
    ws_repo(&r);
    let vm = h.create("wsh", &[]);
    h.ok(&["workspace", "prepare", vm.name(), r.to_str().unwrap()]);
    let before = sh_in(&r, SNAP);
    let apply = [
        "workspace",
        "export",
        vm.name(),
        "--apply",
        "--repo",
        r.to_str().unwrap(),
    ];

    // A symlink out of the repo, made by the guest's real git.
    vm.exec_in("/root/repo", &["ln", "-s", "/etc/passwd", "pw"])
        .success();
    let symlink_out = h.banger(&apply);
    vm.sh(EVIL_GIT);
    let traversal = h.banger(&apply);
    vm.sh(MODE_GIT);
    let odd_mode = h.banger(&apply);

    symlink_out.failure(None, "would point outside the repository");
    traversal.failure(None, "climbs out");
    odd_mode.failure(None, "has file mode 120755");
    assert!(!r.join("leak").is_symlink());
    assert_eq!(sh_in(&r, SNAP), before);
    assert!(!h.run_dir.join("pwned").exists());
    assert!(!h.run_dir.parent().unwrap().join("pwned").exists());
}
