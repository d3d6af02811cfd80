//! Test fixtures: temp git repositories, a local stand-in for a guest, tree snapshots.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use banger_wire::agent::ExecSpec;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::exec::{CaptureError, Captured, Runner};

/// A git repository in a temp dir, with an identity set so commits work.
pub struct TempRepo {
    pub dir: tempfile::TempDir,
}

impl TempRepo {
    pub fn new() -> TempRepo {
        let repo = TempRepo {
            dir: tempfile::tempdir().unwrap(),
        };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["config", "user.email", "t@example.com"]);
        repo.git(&["config", "user.name", "t"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs git in the repository; panics (with its stderr) if it fails.
    pub fn git(&self, args: &[&str]) -> Vec<u8> {
        git_in(self.path(), args)
    }

    pub fn write(&self, rel: &str, data: &[u8]) {
        let path = self.path().join(rel);
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(path, data).unwrap();
    }

    pub fn chmod(&self, rel: &str, mode: u32) {
        fs_err::set_permissions(self.path().join(rel), std::fs::Permissions::from_mode(mode))
            .unwrap();
    }

    pub fn symlink(&self, target: &str, rel: &str) {
        std::os::unix::fs::symlink(target, self.path().join(rel)).unwrap();
    }
}

/// Writes an executable script through a child process, so no writable descriptor of
/// it lives in this multi-threaded test process (a concurrent fork would carry one
/// and running the script would fail with ETXTBSY).
pub fn write_script(path: &Path, text: &str) {
    let status = std::process::Command::new("sh")
        .args([
            "-c",
            r#"printf '%s' "$1" >"$2" && chmod 755 "$2""#,
            "sh",
            text,
        ])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "cannot write {}", path.display());
}

pub fn git_in(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// What a path is, for comparing trees: kind, permission bits, content or target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File { mode: u32, data: Vec<u8> },
    Link(PathBuf),
}

/// Every file and symlink under `root`, `.git` left out unless `with_git`.
pub fn tree(root: &Path, with_git: bool) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs_err::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            if !with_git && rel == Path::new(".git") {
                continue;
            }
            let meta = fs_err::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(rel, Node::Link(fs_err::read_link(&path).unwrap()));
            } else if meta.is_dir() {
                stack.push(path);
            } else {
                let data = fs_err::read(&path).unwrap();
                out.insert(
                    rel,
                    Node::File {
                        mode: meta.mode() & 0o777,
                        data,
                    },
                );
            }
        }
    }
    out
}

/// Runs guest commands on this host: the guest scripts only need sh, git and tar.
pub struct LocalGuest;

impl Runner for LocalGuest {
    fn name(&self) -> &str {
        "local"
    }

    async fn run<R, W>(
        &self,
        spec: ExecSpec,
        mut stdin: R,
        stdout: &mut W,
    ) -> Result<Captured, CaptureError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut child = tokio::process::Command::new(&spec.argv[0])
            .args(&spec.argv[1..])
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(spec.cwd.as_deref().unwrap_or("/"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let (mut cin, mut cout, mut cerr) = (
            child.stdin.take().unwrap(),
            child.stdout.take().unwrap(),
            child.stderr.take().unwrap(),
        );
        let feed = async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let n = stdin.read(&mut buf).await.map_err(CaptureError::Input)?;
                // Like the agent: input the process no longer takes is dropped.
                if n == 0 || cin.write_all(&buf[..n]).await.is_err() {
                    return Ok::<(), CaptureError>(());
                }
            }
        };
        let out = async {
            tokio::io::copy(&mut cout, stdout)
                .await
                .map_err(CaptureError::Output)
        };
        let err = async {
            let mut v = Vec::new();
            cerr.read_to_end(&mut v)
                .await
                .map(|_| v)
                .map_err(CaptureError::Output)
        };
        let (fed, out, stderr) = tokio::join!(feed, out, err);
        fed?;
        out?;
        let status = child.wait().await.unwrap();
        Ok(Captured {
            code: status.code().unwrap_or(128),
            stderr: stderr?,
        })
    }
}
