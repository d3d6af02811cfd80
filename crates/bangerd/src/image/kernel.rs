//! Turning a bzImage into the uncompressed ELF `vmlinux` Firecracker boots, the way
//! Linux's `scripts/extract-vmlinux` does: find the compressed payload by its magic,
//! decompress it, and keep the first result that is an ELF file.

use std::io::Read;

use super::elf;

/// LZ4 "legacy" frame magic, the format the kernel's `lz4c -l` build step writes.
const LZ4_LEGACY_MAGIC: [u8; 4] = 0x184C_2102u32.to_le_bytes();
/// Uncompressed size of every legacy block but the last.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;
const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];
/// A decompressed kernel larger than this is not a kernel.
const MAX_VMLINUX: usize = 1 << 30;

/// Extracts the ELF vmlinux from a bzImage whose payload is LZ4 (legacy) or gzip.
/// The error says what was looked for, for the caller to attach to the kernel's path.
pub fn extract_vmlinux(bzimage: &[u8]) -> Result<Vec<u8>, String> {
    let mut tried = 0;
    for at in find_all(bzimage, &LZ4_LEGACY_MAGIC) {
        tried += 1;
        if let Some(out) = lz4_legacy(&bzimage[at + 4..]).filter(|o| elf::is_elf64(o)) {
            return Ok(out);
        }
    }
    for at in find_all(bzimage, &GZIP_MAGIC) {
        tried += 1;
        if let Some(out) = gunzip(&bzimage[at..]).filter(|o| elf::is_elf64(o)) {
            return Ok(out);
        }
    }
    if tried == 0 {
        Err("no LZ4 or gzip payload found".into())
    } else {
        Err(format!(
            "none of the {tried} LZ4/gzip payload candidates decompresses to an ELF file"
        ))
    }
}

fn find_all<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    hay.windows(needle.len())
        .enumerate()
        .filter(move |(_, w)| *w == needle)
        .map(|(i, _)| i)
}

/// Decodes LZ4 legacy blocks (a little-endian u32 size, then the block) until the data
/// stops looking like a block: the kernel appends the decompressed size and padding.
fn lz4_legacy(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    while data.len() >= 4 {
        let size = u32::from_le_bytes(data[..4].try_into().ok()?) as usize;
        if data[..4] == LZ4_LEGACY_MAGIC {
            data = &data[4..]; // concatenated frames
            continue;
        }
        if size == 0 || size > data.len() - 4 {
            break;
        }
        let Ok(n) = lz4_flex::block::decompress_into(&data[4..4 + size], &mut block) else {
            break;
        };
        out.extend_from_slice(&block[..n]);
        if out.len() > MAX_VMLINUX {
            return None;
        }
        data = &data[4 + size..];
    }
    (!out.is_empty()).then_some(out)
}

fn gunzip(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    // Trailing bytes after the gzip member are ignored by GzDecoder; a corrupt stream
    // errors and this candidate is skipped.
    flate2::read::GzDecoder::new(data)
        .take(MAX_VMLINUX as u64)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn fake_vmlinux(len: usize) -> Vec<u8> {
        let mut v = b"\x7fELF\x02\x01\x01".to_vec();
        v.extend((0..len).map(|i| (i % 251) as u8));
        v
    }

    /// setup code, then a legacy LZ4 stream of two blocks, the appended size, padding.
    fn bzimage_lz4(payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0x90u8; 4096];
        b.extend_from_slice(&LZ4_LEGACY_MAGIC);
        for chunk in payload.chunks(LZ4_LEGACY_BLOCK) {
            let c = lz4_flex::block::compress(chunk);
            b.extend_from_slice(&(c.len() as u32).to_le_bytes());
            b.extend_from_slice(&c);
        }
        b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        b.extend_from_slice(&[0u8; 300]);
        b
    }

    #[test]
    fn lz4_payload_is_extracted_across_blocks() {
        let vmlinux = fake_vmlinux(LZ4_LEGACY_BLOCK + 12345);
        assert_eq!(extract_vmlinux(&bzimage_lz4(&vmlinux)).unwrap(), vmlinux);
    }

    #[test]
    fn magic_bytes_inside_setup_code_do_not_confuse_extraction() {
        let vmlinux = fake_vmlinux(5000);
        let mut blob = vec![1u8; 64];
        blob.extend_from_slice(&LZ4_LEGACY_MAGIC);
        blob.extend_from_slice(&[0xff; 16]);
        blob.extend(bzimage_lz4(&vmlinux));
        assert_eq!(extract_vmlinux(&blob).unwrap(), vmlinux);
    }

    #[test]
    fn gzip_payload_is_extracted() {
        let vmlinux = fake_vmlinux(70_000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&vmlinux).unwrap();
        let mut blob = vec![0u8; 512];
        blob.extend(gz.finish().unwrap());
        blob.extend_from_slice(&[0u8; 8]);
        assert_eq!(extract_vmlinux(&blob).unwrap(), vmlinux);
    }

    #[test]
    fn payload_that_is_not_elf_is_refused() {
        let err = extract_vmlinux(&bzimage_lz4(b"MZ not an elf kernel")).unwrap_err();
        assert!(err.contains("none of the 1"), "{err}");
    }

    #[test]
    fn blob_without_payload_is_refused() {
        let err = extract_vmlinux(&[0u8; 1000]).unwrap_err();
        assert_eq!(err, "no LZ4 or gzip payload found");
    }
}
