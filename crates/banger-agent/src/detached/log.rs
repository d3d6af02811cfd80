//! A detached command's output on disk: stdout and stderr chunks as records, in the
//! order they came, in two segment files. When the current segment would grow past
//! [`DETACHED_OUTPUT_KEPT`] it becomes the previous one (the one before is deleted), so
//! between that much and twice that much of the newest output is kept.
//!
//! Positions are offsets in the concatenation of every segment ever written; a reader
//! keeps one and asks for what follows it. A record is a tag byte (1 stdout, 2 stderr),
//! a 4-byte big-endian length and the bytes.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use banger_wire::agent::DETACHED_OUTPUT_KEPT;

use crate::spawn::OutKind;

const CURRENT: &str = "output";
const PREVIOUS: &str = "output.0";
const HEADER: u64 = 5;

#[derive(Debug, Clone, Copy, Default)]
struct Segment {
    /// Position of its first byte.
    start: u64,
    /// Its size in bytes, records included.
    len: u64,
    /// Output bytes in it.
    payload: u64,
}

impl Segment {
    fn end(&self) -> u64 {
        self.start + self.len
    }
}

struct Segments {
    previous: Option<Segment>,
    current: Segment,
    file: fs_err::File,
    dropped: u64,
}

pub struct OutputLog {
    dir: PathBuf,
    segments: Mutex<Segments>,
    limit: u64,
}

/// Records read from a log: the output chunks and the position after them.
#[derive(Debug, Default)]
pub struct Chunk {
    pub records: Vec<(OutKind, Vec<u8>)>,
    pub next: u64,
}

impl OutputLog {
    /// A new, empty log in `dir` (which exists and is the command's own).
    pub fn create(dir: &Path) -> io::Result<OutputLog> {
        OutputLog::with_limit(dir, DETACHED_OUTPUT_KEPT)
    }

    fn with_limit(dir: &Path, limit: u64) -> io::Result<OutputLog> {
        let file = new_segment(&dir.join(CURRENT))?;
        Ok(OutputLog {
            dir: dir.to_path_buf(),
            segments: Mutex::new(Segments {
                previous: None,
                current: Segment::default(),
                file,
                dropped: 0,
            }),
            limit,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Segments> {
        self.segments.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Output bytes dropped so far to stay under the limit.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Appends one chunk of output (at most [`banger_wire::agent::CHUNK`] bytes: a
    /// small write to the page cache, done in place).
    pub fn append(&self, kind: OutKind, data: &[u8]) -> io::Result<()> {
        let mut s = self.lock();
        let size = HEADER + data.len() as u64;
        if s.current.len > 0 && s.current.len + size > self.limit {
            fs_err::rename(self.dir.join(CURRENT), self.dir.join(PREVIOUS))?;
            s.file = new_segment(&self.dir.join(CURRENT))?;
            if let Some(gone) = s.previous.take() {
                s.dropped += gone.payload;
            }
            s.previous = Some(s.current);
            s.current = Segment {
                start: s.current.end(),
                ..Segment::default()
            };
        }
        let tag = match kind {
            OutKind::Stdout => 1u8,
            OutKind::Stderr => 2u8,
        };
        let mut record = Vec::with_capacity(size as usize);
        record.push(tag);
        record.extend_from_slice(&(data.len() as u32).to_be_bytes());
        record.extend_from_slice(data);
        s.file.write_all(&record)?;
        s.current.len += size;
        s.current.payload += data.len() as u64;
        Ok(())
    }

    /// The records from `pos` to the end of the segment holding it (from the oldest
    /// kept one when `pos` was dropped). `next == pos` means nothing follows yet.
    pub fn read_from(&self, pos: u64) -> io::Result<Chunk> {
        // The file is opened under the lock, so it is the segment's even if a rotation
        // renames it afterwards: a segment only ever grows past `segment.len`.
        let (segment, mut file) = {
            let s = self.lock();
            let (segment, name) = match s.previous {
                Some(prev) if pos < prev.end() => (prev, PREVIOUS),
                _ if pos >= s.current.end() => {
                    return Ok(Chunk {
                        records: Vec::new(),
                        next: pos,
                    })
                }
                _ => (s.current, CURRENT),
            };
            (segment, fs_err::File::open(self.dir.join(name))?)
        };
        let start = pos.max(segment.start);
        file.seek(SeekFrom::Start(start - segment.start))?;
        let mut bytes = Vec::new();
        file.take(segment.end() - start).read_to_end(&mut bytes)?;
        Ok(Chunk {
            records: parse(&bytes)?,
            next: start + bytes.len() as u64,
        })
    }
}

fn new_segment(path: &Path) -> io::Result<fs_err::File> {
    fs_err::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
}

fn parse(mut bytes: &[u8]) -> io::Result<Vec<(OutKind, Vec<u8>)>> {
    let corrupt = || io::Error::new(io::ErrorKind::InvalidData, "corrupt output log");
    let mut records = Vec::new();
    while !bytes.is_empty() {
        let (head, rest) = bytes
            .split_at_checked(HEADER as usize)
            .ok_or_else(corrupt)?;
        let kind = match head[0] {
            1 => OutKind::Stdout,
            2 => OutKind::Stderr,
            _ => return Err(corrupt()),
        };
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let (data, rest) = rest.split_at_checked(len).ok_or_else(corrupt)?;
        records.push((kind, data.to_vec()));
        bytes = rest;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(chunk: &Chunk) -> Vec<String> {
        chunk
            .records
            .iter()
            .map(|(kind, d)| format!("{kind:?}:{}", String::from_utf8_lossy(d)))
            .collect()
    }

    #[test]
    fn records_come_back_in_order_with_their_stream() {
        let dir = tempfile::tempdir().unwrap();
        let log = OutputLog::create(dir.path()).unwrap();

        log.append(OutKind::Stdout, b"one").unwrap();
        log.append(OutKind::Stderr, b"two").unwrap();
        let chunk = log.read_from(0).unwrap();
        let after = log.read_from(chunk.next).unwrap();

        assert_eq!(texts(&chunk), ["Stdout:one", "Stderr:two"]);
        assert_eq!(after.next, chunk.next);
        assert!(after.records.is_empty());
    }

    #[test]
    fn past_the_limit_the_oldest_output_is_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let log = OutputLog::with_limit(dir.path(), 20).unwrap();

        for word in [b"aaaaaaaaaa", b"bbbbbbbbbb", b"cccccccccc"] {
            log.append(OutKind::Stdout, word).unwrap();
        }
        let first = log.read_from(0).unwrap();
        let second = log.read_from(first.next).unwrap();

        assert_eq!(log.dropped(), 10);
        assert_eq!(texts(&first), ["Stdout:bbbbbbbbbb"]);
        assert_eq!(texts(&second), ["Stdout:cccccccccc"]);
    }

    #[test]
    fn a_corrupt_segment_is_an_error() {
        assert!(parse(&[9, 0, 0, 0, 1, b'x']).is_err());
        assert!(parse(&[1, 0, 0, 0, 9, b'x']).is_err());
    }
}
