//! Copying a sparse disk image: only its data ranges are read and written (in the
//! kernel, with `copy_file_range`), its holes stay holes.

use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use nix::errno::Errno;
use nix::unistd::{lseek, Whence};

/// Copies `src` to a new file `dst` of the same length; returns the bytes of data
/// copied. `dst` must not exist.
pub fn copy(src: &Path, dst: &Path) -> io::Result<u64> {
    let input = fs_err::File::open(src)?;
    let len = input.metadata()?.len() as i64;
    let output = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)?;
    output.set_len(len as u64)?;
    let fd = input.file().as_fd();
    let mut pos = 0i64;
    let mut copied = 0u64;
    while pos < len {
        let data = match lseek(fd, pos, Whence::SeekData) {
            Ok(offset) => offset,
            // No data after `pos`: the rest is a hole.
            Err(Errno::ENXIO) => break,
            Err(e) => return Err(io::Error::from(e)),
        };
        let hole = lseek(fd, data, Whence::SeekHole).map_err(io::Error::from)?;
        let (mut off_in, mut off_out) = (data, data);
        while off_in < hole {
            let want = (hole - off_in).min(1 << 30) as usize;
            let n = nix::fcntl::copy_file_range(
                input.file().as_fd(),
                Some(&mut off_in),
                output.file().as_fd(),
                Some(&mut off_out),
                want,
            )
            .map_err(io::Error::from)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} shrank while being copied", src.display()),
                ));
            }
            copied += n as u64;
        }
        pos = hole;
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn data_is_copied_and_holes_stay_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.img");
        let mut f = fs_err::File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&[7u8; 8192]).unwrap();
        f.seek(SeekFrom::Start(40 << 20)).unwrap();
        f.write_all(b"tail data").unwrap();
        drop(f);
        let dst = dir.path().join("dst.img");

        let copied = copy(&src, &dst).unwrap();

        assert_eq!(
            fs_err::read(&dst).unwrap(),
            fs_err::read(&src).unwrap(),
            "contents differ"
        );
        let blocks = fs_err::metadata(&dst).unwrap().blocks() * 512;
        assert!(
            blocks < 1 << 20,
            "dst is not sparse: {blocks} bytes allocated"
        );
        assert!((8192..1 << 20).contains(&copied), "{copied}");
    }

    #[test]
    fn an_existing_destination_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.img");
        fs_err::write(&src, b"x").unwrap();
        fs_err::write(dir.path().join("dst.img"), b"keep").unwrap();

        let err = copy(&src, &dir.path().join("dst.img")).unwrap_err();

        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }
}
