//! Ship and export end to end, with the guest scripts run on this host by
//! [`LocalGuest`] (they need only sh, git and GNU tar).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use super::apply::apply;
use super::ship::ship;
use super::testkit::{git_in, tree, LocalGuest, TempRepo};
use super::*;

/// A committed repository with a text file, a binary file, an executable, a symlink,
/// names with spaces and unicode, and an ignored pattern.
fn sample_repo() -> TempRepo {
    let repo = TempRepo::new();
    repo.write("text.txt", b"one\ntwo\n");
    repo.write("bin.dat", &[0, 159, 146, 150, 0, 255, 1, 2]);
    repo.write("run.sh", b"#!/bin/sh\necho hi\n");
    repo.chmod("run.sh", 0o755);
    repo.symlink("text.txt", "link");
    repo.write("dir with space/\u{fc}nicode \u{2603}.txt", b"snow\n");
    repo.write("gone.txt", b"soon deleted\n");
    repo.write(".gitignore", b"*.log\n");
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-qm", "base"]);
    repo
}

fn ship_opts(guest_dir: &Path, include_untracked: bool) -> ShipOptions {
    ShipOptions {
        include_untracked,
        dest: guest_dir.join("repo").to_str().unwrap().to_string(),
        history: false,
    }
}

fn status(dir: &Path) -> String {
    String::from_utf8(git_in(
        dir,
        &["status", "--porcelain", "--untracked-files=no"],
    ))
    .unwrap()
}

#[tokio::test]
async fn ship_reproduces_working_tree_head_and_status() {
    let repo = sample_repo();
    repo.write("text.txt", b"one\ntwo\nuncommitted\n");
    fs_err::remove_file(repo.path().join("gone.txt")).unwrap();
    repo.write("staged.txt", b"staged\n");
    repo.git(&["add", "staged.txt"]);
    repo.write("secret.env", b"TOKEN=x\n");
    repo.write("build.log", b"ignored\n");
    let guest = tempfile::tempdir().unwrap();
    let opts = ship_opts(guest.path(), false);

    let shipped = ship(&LocalGuest, &HostRepo::open(repo.path()).unwrap(), &opts)
        .await
        .unwrap();

    let dest = PathBuf::from(&opts.dest);
    let mut expected = tree(repo.path(), false);
    expected.remove(Path::new("secret.env"));
    expected.remove(Path::new("build.log"));
    assert_eq!(tree(&dest, false), expected);
    assert_eq!(shipped.files, expected.len());
    assert_eq!(status(&dest), status(repo.path()));
    assert_eq!(status(&dest), " D gone.txt\nA  staged.txt\n M text.txt\n");
    assert_eq!(
        git_in(&dest, &["rev-parse", "HEAD"]),
        repo.git(&["rev-parse", "HEAD"])
    );
    assert_eq!(
        git_in(&dest, &["symbolic-ref", "HEAD"]),
        b"refs/heads/main\n"
    );
    assert_eq!(git_in(&dest, &["diff"]), repo.git(&["diff"]));
}

#[tokio::test]
async fn a_detached_head_ships_detached_with_every_ref_recorded() {
    let repo = sample_repo();
    repo.write("text.txt", b"second\n");
    repo.git(&["commit", "-qam", "second"]);
    repo.git(&["checkout", "-q", "--detach", "HEAD~1"]);
    let guest = tempfile::tempdir().unwrap();
    let opts = ship_opts(guest.path(), false);

    ship(&LocalGuest, &HostRepo::open(repo.path()).unwrap(), &opts)
        .await
        .unwrap();

    let dest = PathBuf::from(&opts.dest);
    let head = repo.git(&["rev-parse", "HEAD"]);
    assert_eq!(git_in(&dest, &["rev-parse", "HEAD"]), head);
    assert_eq!(git_in(&dest, &["rev-parse", "refs/banger/base"]), head);
    assert!(git_in(&dest, &["branch", "--show-current"]).is_empty());
    assert_eq!(
        git_in(&dest, &["rev-parse", "refs/banger/shipped"]),
        repo.git(&["rev-parse", "HEAD^{tree}"])
    );
    assert_eq!(status(&dest), "");
}

#[tokio::test]
async fn shipping_only_reads_the_host_repository() {
    let repo = sample_repo();
    let pack_dir = repo.path().join(".git/objects/pack");
    let before = fs_err::metadata(&pack_dir).unwrap().modified().unwrap();
    let guest = tempfile::tempdir().unwrap();

    for history in [false, true] {
        let mut opts = ship_opts(guest.path(), false);
        opts.history = history;
        opts.dest = format!("{}-{history}", opts.dest);
        ship(&LocalGuest, &HostRepo::open(repo.path()).unwrap(), &opts)
            .await
            .unwrap();
        assert_eq!(
            git_in(Path::new(&opts.dest), &["rev-parse", "HEAD"]),
            repo.git(&["rev-parse", "HEAD"])
        );
    }

    // A temporary pack written (and renamed away) there would have changed its mtime.
    assert_eq!(
        fs_err::metadata(&pack_dir).unwrap().modified().unwrap(),
        before
    );
}

#[tokio::test]
async fn include_untracked_ships_untracked_but_not_ignored_files() {
    let repo = sample_repo();
    repo.write("secret.env", b"TOKEN=x\n");
    repo.write("build.log", b"ignored\n");
    let guest = tempfile::tempdir().unwrap();
    let opts = ship_opts(guest.path(), true);

    ship(&LocalGuest, &HostRepo::open(repo.path()).unwrap(), &opts)
        .await
        .unwrap();

    let dest = PathBuf::from(&opts.dest);
    assert_eq!(fs_err::read(dest.join("secret.env")).unwrap(), b"TOKEN=x\n");
    assert!(!dest.join("build.log").exists());
}

#[tokio::test]
async fn a_repo_without_commits_ships_its_index() {
    let repo = TempRepo::new();
    repo.write("a.txt", b"a\n");
    repo.write("b.txt", b"b\n");
    repo.git(&["add", "a.txt", "b.txt"]);
    repo.write("b.txt", b"b changed\n");
    let guest = tempfile::tempdir().unwrap();
    let opts = ship_opts(guest.path(), false);

    ship(&LocalGuest, &HostRepo::open(repo.path()).unwrap(), &opts)
        .await
        .unwrap();

    let dest = PathBuf::from(&opts.dest);
    assert_eq!(status(&dest), "A  a.txt\nAM b.txt\n");
    assert_eq!(status(&dest), status(repo.path()));
}

#[tokio::test]
async fn a_non_empty_destination_is_refused() {
    let repo = sample_repo();
    let guest = tempfile::tempdir().unwrap();
    let opts = ship_opts(guest.path(), false);
    fs_err::create_dir_all(&opts.dest).unwrap();
    fs_err::write(Path::new(&opts.dest).join("keep"), b"mine").unwrap();

    let err = ship(&LocalGuest, &HostRepo::open(repo.path()).unwrap(), &opts)
        .await
        .unwrap_err();

    assert!(
        matches!(err, WorkspaceError::DestNotEmpty { .. }),
        "{err:?}"
    );
    assert_eq!(
        fs_err::read(Path::new(&opts.dest).join("keep")).unwrap(),
        b"mine"
    );
}

/// Edits, adds, deletes, renames and chmods text and binary files in the guest.
fn change_everything(dest: &Path) {
    fs_err::write(dest.join("text.txt"), b"one\ntwo\nfrom the guest\n").unwrap();
    fs_err::write(dest.join("bin.dat"), [9u8, 0, 8, 0, 7, 255]).unwrap();
    fs_err::write(dest.join("new.txt"), b"brand new\n").unwrap();
    fs_err::write(dest.join("new.bin"), [0u8, 1, 2, 3, 0, 200]).unwrap();
    fs_err::remove_file(dest.join("gone.txt")).unwrap();
    fs_err::rename(dest.join("dir with space"), dest.join("moved dir")).unwrap();
    let mode = |p: &str, m: u32| {
        use std::os::unix::fs::PermissionsExt;
        fs_err::set_permissions(dest.join(p), std::fs::Permissions::from_mode(m)).unwrap();
    };
    mode("text.txt", 0o755);
    mode("bin.dat", 0o755);
    mode("run.sh", 0o644);
    fs_err::remove_file(dest.join("link")).unwrap();
    std::os::unix::fs::symlink("run.sh", dest.join("link")).unwrap();
}

#[tokio::test]
async fn export_against_head_applies_to_a_clean_clone_and_reproduces_the_guest() {
    let repo = sample_repo();
    let guest = tempfile::tempdir().unwrap();
    let opts = ship_opts(guest.path(), false);
    ship(&LocalGuest, &HostRepo::open(repo.path()).unwrap(), &opts)
        .await
        .unwrap();
    let dest = PathBuf::from(&opts.dest);
    change_everything(&dest);
    let clone = tempfile::tempdir().unwrap();
    git_in(
        clone.path(),
        &["clone", "-q", repo.path().to_str().unwrap(), "c"],
    );
    let clone = clone.path().join("c");
    let patch_file = tempfile::NamedTempFile::new().unwrap();

    let mut out = tokio::fs::File::from_std(patch_file.reopen().unwrap());
    export(&LocalGuest, &opts.dest, Base::Head, &mut out)
        .await
        .unwrap();
    let applied = apply(&clone, patch_file.path(), "local").unwrap();

    assert!(
        matches!(
            applied,
            Applied::Clean {
                three_way: false,
                ..
            }
        ),
        "{applied:?}"
    );
    assert_eq!(tree(&clone, false), tree(&dest, false));
    assert_eq!(
        git_in(&dest, &["diff", "--cached", "--name-only"]),
        b"",
        "the guest index moved"
    );
}

#[tokio::test]
async fn export_since_ship_applies_over_uncommitted_host_edits() {
    let repo = sample_repo();
    repo.write("text.txt", b"one\ntwo\nhost edit\n");
    let guest = tempfile::tempdir().unwrap();
    let opts = ship_opts(guest.path(), false);
    ship(&LocalGuest, &HostRepo::open(repo.path()).unwrap(), &opts)
        .await
        .unwrap();
    let dest = PathBuf::from(&opts.dest);
    fs_err::write(dest.join("text.txt"), b"zero\none\ntwo\nhost edit\n").unwrap();
    fs_err::write(dest.join("added.txt"), b"added in guest\n").unwrap();
    let patch_file = tempfile::NamedTempFile::new().unwrap();

    let mut out = tokio::fs::File::from_std(patch_file.reopen().unwrap());
    export(&LocalGuest, &opts.dest, Base::Shipped, &mut out)
        .await
        .unwrap();
    let applied = apply(repo.path(), patch_file.path(), "local").unwrap();

    assert_eq!(
        applied,
        Applied::Clean {
            files: 2,
            three_way: false
        }
    );
    assert_eq!(tree(repo.path(), false), tree(&dest, false));
}

#[tokio::test]
async fn export_without_changes_is_empty() {
    let repo = sample_repo();
    let guest = tempfile::tempdir().unwrap();
    let opts = ship_opts(guest.path(), false);
    ship(&LocalGuest, &HostRepo::open(repo.path()).unwrap(), &opts)
        .await
        .unwrap();
    let mut out = Vec::new();

    export(&LocalGuest, &opts.dest, Base::Head, &mut out)
        .await
        .unwrap();

    assert_eq!(String::from_utf8_lossy(&out), "");
}

#[tokio::test]
async fn export_without_a_shipped_workspace_says_so() {
    let guest = tempfile::tempdir().unwrap();
    let mut out = Vec::new();

    let err = export(
        &LocalGuest,
        guest.path().to_str().unwrap(),
        Base::Head,
        &mut out,
    )
    .await
    .unwrap_err();

    assert!(matches!(err, WorkspaceError::NoWorkspace { .. }), "{err:?}");
}

#[test]
fn dry_run_lists_what_would_be_shipped() {
    let repo = sample_repo();
    fs_err::remove_file(repo.path().join("gone.txt")).unwrap();
    repo.write("untracked.txt", b"u\n");
    let mut out = Vec::new();

    list(&HostRepo::open(repo.path()).unwrap(), false, &mut out).unwrap();

    assert_eq!(
        String::from_utf8(out).unwrap(),
        ".gitignore\nbin.dat\ndir with space/\u{fc}nicode \u{2603}.txt\nlink\nrun.sh\ntext.txt\n"
    );
}

#[tokio::test]
async fn the_shipped_tree_is_exactly_what_was_shipped() {
    let repo = sample_repo();
    repo.write("text.txt", b"edited\n");
    fs_err::remove_file(repo.path().join("gone.txt")).unwrap();
    repo.write("staged.txt", b"staged\n");
    repo.git(&["add", "staged.txt"]);
    repo.write("staged.txt", b"staged, then edited\n");
    repo.write("untracked dir/new.txt", b"untracked\n");
    let guest = tempfile::tempdir().unwrap();
    let opts = ship_opts(guest.path(), true);
    ship(&LocalGuest, &HostRepo::open(repo.path()).unwrap(), &opts)
        .await
        .unwrap();
    let mut since_ship = Vec::new();

    export(&LocalGuest, &opts.dest, Base::Shipped, &mut since_ship)
        .await
        .unwrap();

    assert_eq!(String::from_utf8_lossy(&since_ship), "");
}

/// Every file under `dir` with its size and mtime.
fn listing(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs_err::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                todo.push(e.path());
            } else {
                out.push((e.path(), meta.len(), meta.modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_staged_tree_is_made_beside_the_host_repository_not_in_it() {
    let repo = sample_repo();
    // Staged and not committed: the index's trees exist nowhere yet.
    repo.write("new_dir/staged.txt", b"staged\n");
    repo.git(&["add", "-A"]);
    let before = listing(&repo.path().join(".git"));
    let guest = tempfile::tempdir().unwrap();
    let opts = ship_opts(guest.path(), false);

    ship(&LocalGuest, &HostRepo::open(repo.path()).unwrap(), &opts)
        .await
        .unwrap();

    assert_eq!(listing(&repo.path().join(".git")), before);
    let dest = Path::new(&opts.dest);
    git_in(dest, &["fsck", "--no-progress", "--connectivity-only"]);
    assert_eq!(status(dest), "A  new_dir/staged.txt\n");
    assert_eq!(
        git_in(dest, &["diff", "--cached", "refs/banger/shipped", "--stat"]),
        b""
    );
}

#[tokio::test]
async fn a_sha256_repository_ships_as_one() {
    let repo = TempRepo::new();
    fs_err::remove_dir_all(repo.path().join(".git")).unwrap();
    repo.git(&["init", "-q", "-b", "main", "--object-format=sha256"]);
    repo.git(&["config", "user.email", "t@example.com"]);
    repo.git(&["config", "user.name", "t"]);
    repo.write("f.txt", b"v1\n");
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-qm", "c"]);
    let guest = tempfile::tempdir().unwrap();
    let opts = ship_opts(guest.path(), false);

    ship(&LocalGuest, &HostRepo::open(repo.path()).unwrap(), &opts)
        .await
        .unwrap();

    let dest = Path::new(&opts.dest);
    assert_eq!(
        git_in(dest, &["rev-parse", "HEAD"]),
        repo.git(&["rev-parse", "HEAD"])
    );
    assert_eq!(status(dest), "");
}
