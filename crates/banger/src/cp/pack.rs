//! The host side of an upload: a file or directory tree as a tar stream, written on a
//! blocking thread into a small bounded channel. Nothing is staged on disk and at most
//! a few chunks sit in memory; the exec stream pulls as fast as the guest extracts.
//!
//! Entries keep their mode and mtime. The source itself is followed if it is a symlink;
//! symlinks below it are archived as links. Sockets, FIFOs and devices are skipped and
//! reported.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tokio::task::JoinHandle;

use super::error::CopyError;
use crate::pipe::{self, ChannelWriter};

/// What an upload sent.
#[derive(Debug, Default)]
pub struct Packed {
    pub entries: u64,
    /// Host paths left out: sockets, FIFOs, devices.
    pub skipped: Vec<PathBuf>,
}

/// Starts archiving `src` under the name `top`; read the archive from the returned
/// reader. A failure ends the stream with an error (never a clean end), and the
/// handle says what failed.
pub fn spawn(src: PathBuf, top: OsString) -> (pipe::Reader, JoinHandle<Result<Packed, CopyError>>) {
    pipe::spawn(move |writer| write_tar(&src, Path::new(&top), writer))
}

/// Writes `src` (a file, a symlink or a directory tree) as tar entries named from
/// `top` into `out`.
pub fn write_tar<W: Write + Closable>(src: &Path, top: &Path, out: W) -> Result<Packed, CopyError> {
    // A symlink named as the source is followed; symlinks below it are archived as links.
    let src = fs_err::canonicalize(src).map_err(|source| CopyError::Read {
        path: src.to_path_buf(),
        source,
    })?;
    let mut tar = tar::Builder::new(out);
    let mut packed = Packed::default();
    // Depth first, a directory before its children, siblings in name order.
    let mut todo = vec![(src, top.to_path_buf())];
    while let Some((path, name)) = todo.pop() {
        let meta = fs_err::symlink_metadata(&path).map_err(|source| CopyError::Read {
            path: path.clone(),
            source,
        })?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        let kind = meta.file_type();
        let appended = if kind.is_dir() {
            let mut children = read_dir_sorted(&path)?;
            children.reverse();
            todo.extend(children.into_iter().map(|c| (path.join(&c), name.join(&c))));
            header.set_size(0);
            tar.append_data(&mut header, &name, io::empty())
        } else if kind.is_file() {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                .open(&path)
                .map_err(|source| CopyError::Read {
                    path: path.clone(),
                    source,
                })?;
            let mut exact = Exact {
                inner: file,
                left: meta.len(),
                shrank: false,
            };
            let r = tar.append_data(&mut header, &name, &mut exact);
            if exact.shrank {
                return Err(CopyError::Shrank { path });
            }
            r
        } else if kind.is_symlink() {
            let target = fs_err::read_link(&path).map_err(|source| CopyError::Read {
                path: path.clone(),
                source,
            })?;
            tar.append_link(&mut header, &name, target)
        } else {
            packed.skipped.push(path);
            continue;
        };
        appended.map_err(|source| {
            if tar.get_ref().is_closed() {
                CopyError::Closed
            } else {
                CopyError::Read { path, source }
            }
        })?;
        packed.entries += 1;
    }
    let out = tar.into_inner().map_err(|_| CopyError::Closed)?;
    out.finish()?;
    Ok(packed)
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<OsString>, CopyError> {
    let err = |source| CopyError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = fs_err::read_dir(dir)
        .map_err(err)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    names.sort();
    Ok(names)
}

/// Reads exactly the size the header announced: a file that grows is cut at that
/// size, one that shrinks fails the copy (its header would lie).
struct Exact<R> {
    inner: R,
    left: u64,
    shrank: bool,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            self.shrank = true;
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A sink that can tell a vanished consumer from other failures.
pub trait Closable {
    fn is_closed(&self) -> bool;
    /// Flushes what is buffered; the stream then ends cleanly.
    fn finish(self) -> Result<(), CopyError>;
}

impl Closable for ChannelWriter {
    fn is_closed(&self) -> bool {
        ChannelWriter::is_closed(self)
    }
    fn finish(mut self) -> Result<(), CopyError> {
        self.flush().map_err(|_| CopyError::Closed)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use tokio::io::AsyncReadExt;

    use banger_wire::agent::CHUNK;

    use super::*;

    impl Closable for &mut Vec<u8> {
        fn is_closed(&self) -> bool {
            false
        }
        fn finish(self) -> Result<(), CopyError> {
            Ok(())
        }
    }

    fn entries(archive: &[u8]) -> Vec<(String, tar::EntryType, u32, Vec<u8>)> {
        let mut ar = tar::Archive::new(archive);
        ar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let kind = e.header().entry_type();
                let mode = e.header().mode().unwrap() & 0o7777;
                let mut data = Vec::new();
                if kind == tar::EntryType::Symlink {
                    data = e.link_name_bytes().unwrap().into_owned();
                } else {
                    e.read_to_end(&mut data).unwrap();
                }
                (path, kind, mode, data)
            })
            .collect()
    }

    #[test]
    fn a_tree_is_archived_under_the_new_name_with_modes_and_links() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs_err::create_dir_all(src.join("sub dir/ünï ☃")).unwrap();
        fs_err::write(src.join("run.sh"), "#!/bin/sh\n").unwrap();
        fs_err::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o750))
            .unwrap();
        fs_err::write(src.join("sub dir/ünï ☃/f"), "snow").unwrap();
        std::os::unix::fs::symlink("../run.sh", src.join("sub dir/link")).unwrap();
        fs_err::set_permissions(src.join("sub dir"), std::fs::Permissions::from_mode(0o701))
            .unwrap();

        let mut out = Vec::new();
        let packed = write_tar(&src, Path::new("dst"), &mut out).unwrap();

        let got = entries(&out);
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "dst",
                "dst/run.sh",
                "dst/sub dir",
                "dst/sub dir/link",
                "dst/sub dir/ünï ☃",
                "dst/sub dir/ünï ☃/f"
            ]
        );
        assert_eq!(
            (got[1].2, got[1].3.as_slice()),
            (0o750, &b"#!/bin/sh\n"[..])
        );
        assert_eq!((got[2].1, got[2].2), (tar::EntryType::Directory, 0o701));
        assert_eq!(
            (got[3].1, got[3].3.as_slice()),
            (tar::EntryType::Symlink, &b"../run.sh"[..])
        );
        assert_eq!(got[5].3, b"snow");
        assert_eq!(packed.entries, 6);
    }

    #[test]
    fn a_symlink_source_is_followed() {
        let tmp = tempfile::tempdir().unwrap();
        fs_err::write(tmp.path().join("real"), "data").unwrap();
        std::os::unix::fs::symlink("real", tmp.path().join("link")).unwrap();
        let mut out = Vec::new();

        write_tar(&tmp.path().join("link"), Path::new("link"), &mut out).unwrap();

        let got = entries(&out);
        assert_eq!(
            (got[0].0.as_str(), got[0].1, &got[0].3[..]),
            ("link", tar::EntryType::Regular, &b"data"[..])
        );
    }

    #[test]
    fn a_socket_is_skipped_and_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let tmp_path = fs_err::canonicalize(tmp.path()).unwrap();
        let sock = tmp_path.join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();

        let packed = write_tar(tmp.path(), Path::new("d"), &mut Vec::new()).unwrap();

        assert_eq!(packed.skipped, vec![sock]);
        assert_eq!(packed.entries, 1);
    }

    #[test]
    fn a_missing_source_names_its_path() {
        let tmp = tempfile::tempdir().unwrap();
        let gone = tmp.path().join("gone");

        let err = write_tar(&gone, Path::new("x"), &mut Vec::new()).unwrap_err();

        assert!(
            matches!(err, CopyError::Read { ref path, .. } if *path == gone),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn the_stream_carries_a_large_file_intact_in_bounded_chunks() {
        let tmp = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..3 * CHUNK + 100).map(|i| (i % 253) as u8).collect();
        fs_err::write(tmp.path().join("big"), &big).unwrap();

        let (mut reader, handle) = spawn(tmp.path().join("big"), "b i g".into());
        let mut archive = Vec::new();
        reader.read_to_end(&mut archive).await.unwrap();

        handle.await.unwrap().unwrap();
        let got = entries(&archive);
        assert_eq!((got[0].0.as_str(), &got[0].3), ("b i g", &big));
    }

    #[tokio::test]
    async fn a_failure_ends_the_stream_with_an_error_not_an_eof() {
        let tmp = tempfile::tempdir().unwrap();

        let (mut reader, handle) = spawn(tmp.path().join("nope"), "x".into());
        let mut archive = Vec::new();
        let read = reader.read_to_end(&mut archive).await;

        assert!(read.is_err(), "the reader saw a clean end");
        assert!(matches!(handle.await.unwrap(), Err(CopyError::Read { .. })));
    }
}
