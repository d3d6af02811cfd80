//! The working tree as a tar stream, built on a blocking thread and handed to async
//! code through a small bounded channel: no temp file, no whole copy in memory.

use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

use tokio::task::JoinHandle;

use super::error::WorkspaceError;
use super::repo::{lstat, Kind, ShipEntry};
use crate::pipe;

/// A small file made on the host and carried first in the tar (bookkeeping for the
/// guest's scripts).
#[derive(Debug, Clone)]
pub struct Prelude {
    pub path: PathBuf,
    pub data: Vec<u8>,
}

/// Host files to carry: `entries` are relative to `root` and go in the tar below `under`.
#[derive(Debug, Clone)]
pub struct Tree {
    pub root: PathBuf,
    pub under: PathBuf,
    pub entries: Vec<ShipEntry>,
}

/// A tar archive being written: small files made on the host and trees of host files,
/// in the order they are added, each file read as it is now. Ownership is left out
/// (the guest extracts as its user).
pub struct TarWriter<W: Write> {
    tar: tar::Builder<W>,
}

fn werr(source: io::Error) -> WorkspaceError {
    WorkspaceError::Write {
        path: PathBuf::from("<tar stream>"),
        source,
    }
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            tar: tar::Builder::new(out),
        }
    }

    pub fn prelude(&mut self, files: &[Prelude]) -> Result<(), WorkspaceError> {
        for file in files {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o600);
            header.set_size(file.data.len() as u64);
            self.tar
                .append_data(&mut header, &file.path, &file.data[..])
                .map_err(werr)?;
        }
        Ok(())
    }

    pub fn tree(&mut self, tree: &Tree) -> Result<(), WorkspaceError> {
        let tar = &mut self.tar;
        for entry in &tree.entries {
            let full = tree.root.join(&entry.path);
            let name = tree.under.join(&entry.path);
            let gone = || WorkspaceError::Changed { path: full.clone() };
            let meta = lstat(&full)?.ok_or_else(gone)?;
            let mut header = tar::Header::new_gnu();
            header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
            header.set_uid(0);
            header.set_gid(0);
            match entry.kind {
                Kind::Symlink if meta.file_type().is_symlink() => {
                    let target =
                        fs_err::read_link(&full).map_err(|source| WorkspaceError::Read {
                            path: full.clone(),
                            source,
                        })?;
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    tar.append_link(&mut header, &name, &target).map_err(werr)?;
                }
                Kind::File if meta.file_type().is_file() => {
                    let file = std::fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                        .open(&full)
                        .map_err(|source| WorkspaceError::Read {
                            path: full.clone(),
                            source,
                        })?;
                    let meta = file.metadata().map_err(|source| WorkspaceError::Read {
                        path: full.clone(),
                        source,
                    })?;
                    if !meta.is_file() {
                        return Err(gone());
                    }
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(meta.mode() & 0o7777);
                    header.set_size(meta.len());
                    let mut body = Exact {
                        inner: file.take(meta.len()),
                        left: meta.len(),
                    };
                    if let Err(e) = tar.append_data(&mut header, &name, &mut body) {
                        return Err(if body.left > 0 {
                            gone()
                        } else {
                            WorkspaceError::Read {
                                path: full.clone(),
                                source: e,
                            }
                        });
                    }
                }
                _ => return Err(gone()),
            }
        }
        Ok(())
    }

    pub fn finish(self) -> Result<W, WorkspaceError> {
        self.tar.into_inner().map_err(werr)
    }
}

/// Yields exactly `left` bytes or fails: a file that shrank mid-read must not produce a
/// tar entry shorter than its header says.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while read",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Runs `build` on a blocking thread to write a tar archive: read it from the returned
/// reader; the handle reports how the build went. If the build fails, the reader fails
/// too (it never ends cleanly on a partial archive).
pub fn stream<F>(build: F) -> (pipe::Reader, JoinHandle<Result<(), WorkspaceError>>)
where
    F: FnOnce(&mut TarWriter<pipe::ChannelWriter>) -> Result<(), WorkspaceError> + Send + 'static,
{
    pipe::spawn(move |writer| {
        let mut tar = TarWriter::new(writer);
        build(&mut tar)?;
        tar.finish()?.flush().map_err(werr)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Read as _;

    use tokio::io::AsyncReadExt;

    use banger_wire::agent::CHUNK;

    use super::*;
    use crate::workspace::repo::{HostRepo, Manifest};
    use crate::workspace::testkit::TempRepo;

    /// Path, entry type, mode, link target and content of a tar entry.
    type Entry = (String, tar::EntryType, u32, Option<String>, Vec<u8>);

    fn top(repo: &TempRepo, manifest: &Manifest) -> Tree {
        Tree {
            root: repo.path().to_path_buf(),
            under: PathBuf::new(),
            entries: manifest.entries.clone(),
        }
    }

    fn tar_of(tree: Tree) -> Result<Vec<u8>, WorkspaceError> {
        let mut tar = TarWriter::new(Vec::new());
        tar.tree(&tree)?;
        tar.finish()
    }

    fn entries(tar_bytes: &[u8]) -> Vec<Entry> {
        let mut archive = tar::Archive::new(tar_bytes);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut e = entry.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            let (kind, mode) = (e.header().entry_type(), e.header().mode().unwrap());
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.push((path, kind, mode, link, data));
        }
        out
    }

    #[test]
    fn the_tar_keeps_content_modes_symlinks_and_odd_names() {
        let repo = TempRepo::new();
        let long = format!("{}/deep.txt", "d".repeat(150));
        repo.write("a b.txt", b"committed\n");
        repo.write("\u{e9}t\u{e9}.bin", &[0, 1, 2, 255]);
        repo.write("tool", b"#!/bin/sh\n");
        repo.chmod("tool", 0o755);
        repo.write(&long, b"long\n");
        repo.symlink("a b.txt", "link");
        repo.git(&["add", "-A"]);
        repo.git(&["commit", "-qm", "c"]);
        repo.write("a b.txt", b"uncommitted\n");
        let manifest = Manifest::collect(&HostRepo::open(repo.path()).unwrap(), false).unwrap();

        let bytes = tar_of(top(&repo, &manifest)).unwrap();

        use tar::EntryType::{Regular, Symlink};
        assert_eq!(
            entries(&bytes),
            vec![
                (
                    "a b.txt".into(),
                    Regular,
                    0o644,
                    None,
                    b"uncommitted\n".to_vec()
                ),
                (long.clone(), Regular, 0o644, None, b"long\n".to_vec()),
                (
                    "link".into(),
                    Symlink,
                    0o777,
                    Some("a b.txt".into()),
                    vec![]
                ),
                ("tool".into(), Regular, 0o755, None, b"#!/bin/sh\n".to_vec()),
                (
                    "\u{e9}t\u{e9}.bin".into(),
                    Regular,
                    0o644,
                    None,
                    vec![0, 1, 2, 255]
                ),
            ]
        );
    }

    #[test]
    fn deleted_untracked_and_ignored_files_stay_out() {
        let repo = TempRepo::new();
        repo.write("kept", b"k\n");
        repo.write("deleted", b"d\n");
        repo.write(".gitignore", b"*.log\n");
        repo.git(&["add", "-A"]);
        repo.git(&["commit", "-qm", "c"]);
        fs_err::remove_file(repo.path().join("deleted")).unwrap();
        repo.write("untracked", b"u\n");
        repo.write("x.log", b"ignored\n");
        let manifest = Manifest::collect(&HostRepo::open(repo.path()).unwrap(), false).unwrap();

        let bytes = tar_of(top(&repo, &manifest)).unwrap();

        let names: Vec<String> = entries(&bytes).into_iter().map(|e| e.0).collect();
        assert_eq!(names, vec![".gitignore", "kept"]);
    }

    #[tokio::test]
    async fn the_stream_carries_the_same_archive() {
        let repo = TempRepo::new();
        repo.write("big", &vec![7u8; 3 * CHUNK + 5]);
        repo.write("small", b"s\n");
        repo.git(&["add", "-A"]);
        let manifest = Manifest::collect(&HostRepo::open(repo.path()).unwrap(), false).unwrap();
        let expected = tar_of(top(&repo, &manifest)).unwrap();

        let (mut reader, handle) = stream(move |tar| tar.tree(&top(&repo, &manifest)));
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();

        handle.await.unwrap().unwrap();
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn a_file_that_vanishes_fails_the_stream_instead_of_ending_it() {
        let repo = TempRepo::new();
        repo.write("a", b"a\n");
        repo.write("b", b"b\n");
        repo.git(&["add", "-A"]);
        let manifest = Manifest::collect(&HostRepo::open(repo.path()).unwrap(), false).unwrap();
        fs_err::remove_file(repo.path().join("b")).unwrap();

        let (mut reader, handle) = stream(move |tar| tar.tree(&top(&repo, &manifest)));
        let read = reader.read_to_end(&mut Vec::new()).await;

        assert!(read.is_err());
        assert!(matches!(
            handle.await.unwrap(),
            Err(WorkspaceError::Changed { .. })
        ));
    }
}
