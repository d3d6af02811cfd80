//! Host git repositories for the workspace scenarios, and the probe that compares trees.

use std::path::Path;
use std::process::Command;

/// Every file and symlink below `.` (no `.git`): kind, mode or target, content hash, path.
/// The same script runs in the guest and on the host, so the two trees compare line by
/// line.
pub const TREE_SUM: &str = r#"find . -path ./.git -prune -o \( -type f -o -type l \) -print | LC_ALL=C sort |
  while IFS= read -r f; do
    if [ -L "$f" ]; then echo "L $(readlink "$f") $f";
    else echo "F $(stat -c %a "$f") $(sha256sum <"$f" | cut -c1-64) $f"; fi
  done"#;

/// `git -C DIR ARGS`, which must succeed.
pub fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("run git: {e}"));
    assert!(
        status.success(),
        "git -C {} {}: {status}",
        dir.display(),
        args.join(" ")
    );
}

/// `sh -c SCRIPT` on the host in `dir`, which must succeed; its stdout without the
/// trailing newlines.
pub fn sh_in(dir: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run sh in {}: {e}", dir.display()));
    assert!(
        out.status.success(),
        "sh -c {script:?} in {}: {}\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim_end_matches('\n')
        .to_string()
}

fn write(path: &Path, data: impl AsRef<[u8]>) {
    fs_err::write(path, data).unwrap_or_else(|e| panic!("{e}"));
}

/// `len` random bytes.
pub fn random_bytes(len: usize) -> Vec<u8> {
    use std::io::Read;
    let mut buf = vec![0u8; len];
    let urandom = fs_err::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    urandom.unwrap_or_else(|e| panic!("read /dev/urandom: {e}"));
    buf
}

/// A repository at `r` with what shipping must keep: an exec bit, a symlink, binary data,
/// odd names; plus an uncommitted edit, a staged file, a deleted file, an untracked
/// (`untracked.env`) and an ignored one (`build.log`).
pub fn ws_repo(r: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if r.exists() {
        fs_err::remove_dir_all(r).unwrap_or_else(|e| panic!("{e}"));
    }
    fs_err::create_dir_all(r.join("dir with space")).unwrap_or_else(|e| panic!("{e}"));
    git(r, &["init", "-q", "-b", "main"]);
    git(r, &["config", "user.email", "smoke@banger.test"]);
    git(r, &["config", "user.name", "smoke"]);
    write(&r.join("tracked.txt"), "committed\n");
    write(&r.join("run.sh"), "#!/bin/sh\necho run\n");
    fs_err::set_permissions(r.join("run.sh"), std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("{e}"));
    write(&r.join("blob.bin"), random_bytes(4096));
    write(&r.join("old.bin"), random_bytes(1024));
    write(&r.join("dir with space/ünï ☃.txt"), "snow\n");
    std::os::unix::fs::symlink("tracked.txt", r.join("link")).unwrap_or_else(|e| panic!("{e}"));
    write(&r.join("deleted.txt"), "gone\n");
    write(&r.join(".gitignore"), "*.log\n");
    git(r, &["add", "-A"]);
    git(r, &["commit", "-qm", "base"]);
    write(&r.join("tracked.txt"), "uncommitted\n");
    fs_err::remove_file(r.join("deleted.txt")).unwrap_or_else(|e| panic!("{e}"));
    write(&r.join("staged.txt"), "staged\n");
    git(r, &["add", "staged.txt"]);
    write(&r.join("untracked.env"), "SECRET=1\n");
    write(&r.join("build.log"), "noise\n");
}
