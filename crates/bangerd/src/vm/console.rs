//! Keeps a running VM's console log (`serial.log`) under a cap: the guest writes it at
//! will, so its size is not ours to trust. When the log grows past the cap, its oldest
//! part is cut in place (`FALLOC_FL_COLLAPSE_RANGE`), keeping the newest half; the
//! VMM appends (`O_APPEND`), so its writes land at the new end. On filesystems that
//! cannot collapse a range, the log is emptied and starts again with a marker line.

use std::path::PathBuf;

use futures::StreamExt;
use inotify::{Inotify, WatchMask};
use tokio::sync::watch;

/// What the log says where older output was dropped.
const DROPPED: &str = "[banger: older console output dropped]\n";

/// Watches `path` until `exited` turns true, capping it at `cap` bytes on every write.
pub async fn keep_capped(path: PathBuf, cap: u64, mut exited: watch::Receiver<bool>) {
    // Opened once: a flooding guest must not cost an open per write.
    let watched = fs_err::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|log| {
            let inotify = Inotify::init()?;
            inotify.watches().add(&path, WatchMask::MODIFY)?;
            Ok((log, inotify.into_event_stream([0u8; 1024])?))
        });
    let (log, mut events) = match watched {
        Ok(watched) => watched,
        Err(e) => {
            return tracing::warn!(path = %path.display(), cause = %e, "cannot watch the console log; it is not capped")
        }
    };
    // Whatever was written before the watch started counts too.
    cap_once(&log, cap);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(_)) => {
                    cap_once(&log, cap);
                }
                _ => return,
            },
            _ = exited.wait_for(|e| *e) => return,
        }
    }
}

/// Cuts the log back to about half of `cap` once it is over `cap`; returns the bytes
/// cut. Errors are logged: a console log is never worth failing a VM for.
pub fn cap_once(log: &fs_err::File, cap: u64) -> u64 {
    match try_cap(log, cap) {
        Ok(cut) => cut,
        Err(e) => {
            tracing::warn!(path = %log.path().display(), cause = %e, "cannot cap the console log");
            0
        }
    }
}

fn try_cap(file: &fs_err::File, cap: u64) -> std::io::Result<u64> {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let meta = file.metadata()?;
    let size = meta.len();
    if size <= cap {
        return Ok(0);
    }
    let block = meta.blksize().max(1);
    let cut = (size - cap / 2) / block * block;
    let collapsed = cut > 0
        && rustix::fs::fallocate(file, rustix::fs::FallocateFlags::COLLAPSE_RANGE, 0, cut).is_ok();
    if collapsed {
        return Ok(cut);
    }
    file.set_len(0)?;
    file.file().write_all_at(DROPPED.as_bytes(), 0)?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_over_the_cap_keeps_its_newest_part() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let line = |i: usize| format!("line {i:07}\n");
        let text: String = (0..200_000).map(line).collect();
        fs_err::write(&path, &text).unwrap();
        let cap = 256 * 1024;

        let log = fs_err::OpenOptions::new().write(true).open(&path).unwrap();
        let cut = cap_once(&log, cap);

        let after = fs_err::read_to_string(&path).unwrap();
        assert!(cut > 0);
        assert!(after.len() as u64 <= cap, "{} bytes left", after.len());
        assert!(after.ends_with(&line(199_999)), "the newest output stays");
        assert_eq!(cap_once(&log, cap), 0, "under the cap nothing more is cut");
    }

    #[test]
    fn appends_after_a_cut_land_at_the_new_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        fs_err::write(&path, vec![b'x'; 1 << 20]).unwrap();
        let mut vmm = fs_err::OpenOptions::new().append(true).open(&path).unwrap();

        let log = fs_err::OpenOptions::new().write(true).open(&path).unwrap();
        cap_once(&log, 64 * 1024);
        std::io::Write::write_all(&mut vmm, b"after the cut\n").unwrap();

        let after = fs_err::read(&path).unwrap();
        assert!(after.len() <= 64 * 1024 + 14, "{} bytes", after.len());
        assert!(after.ends_with(b"after the cut\n"));
    }
}
