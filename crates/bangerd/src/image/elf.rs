//! Just enough ELF64 (little-endian) reading for kernel modules and static binaries.

pub(crate) const MAGIC: &[u8; 4] = b"\x7fELF";
const PT_INTERP: u32 = 3;

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<usize> {
    usize::try_from(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?)).ok()
}

/// Whether `b` starts like a 64-bit little-endian ELF file.
pub(crate) fn is_elf64(b: &[u8]) -> bool {
    b.starts_with(MAGIC) && b.get(4) == Some(&2) && b.get(5) == Some(&1)
}

/// The contents of the section called `name`, if the file has one.
pub(crate) fn section<'a>(b: &'a [u8], name: &str) -> Option<&'a [u8]> {
    if !is_elf64(b) {
        return None;
    }
    let shoff = u64_at(b, 0x28)?;
    let shentsize = usize::from(u16_at(b, 0x3a)?);
    let shnum = usize::from(u16_at(b, 0x3c)?);
    let shstrndx = usize::from(u16_at(b, 0x3e)?);
    let header = |i: usize| -> Option<(usize, usize, usize)> {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        let name_off = u32_at(b, h)? as usize;
        Some((name_off, u64_at(b, h + 0x18)?, u64_at(b, h + 0x20)?))
    };
    let (_, str_off, str_size) = header(shstrndx)?;
    let strtab = b.get(str_off..str_off.checked_add(str_size)?)?;
    (0..shnum).find_map(|i| {
        let (name_off, off, size) = header(i)?;
        let rest = strtab.get(name_off..)?;
        let end = rest.iter().position(|&c| c == 0)?;
        if &rest[..end] != name.as_bytes() {
            return None;
        }
        b.get(off..off.checked_add(size)?)
    })
}

/// Whether the executable asks for no program interpreter (is statically linked).
pub(crate) fn is_static(b: &[u8]) -> bool {
    if !is_elf64(b) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (u64_at(b, 0x20), u16_at(b, 0x36), u16_at(b, 0x38))
    else {
        return false;
    };
    !(0..usize::from(phnum)).any(|i| {
        phoff
            .checked_add(i * usize::from(phentsize))
            .and_then(|h| u32_at(b, h))
            == Some(PT_INTERP)
    })
}

/// The `depends=` list of a kernel module's `.modinfo` section.
pub(crate) fn module_depends(ko: &[u8]) -> Option<Vec<String>> {
    let modinfo = section(ko, ".modinfo")?;
    modinfo
        .split(|&c| c == 0)
        .find_map(|kv| kv.strip_prefix(b"depends="))
        .map(|deps| {
            String::from_utf8_lossy(deps)
                .split(',')
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .collect()
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF64 with a section header table: a null section, `.modinfo` holding
    /// `modinfo`, and `.shstrtab`.
    pub(crate) fn elf_with_modinfo(modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.modinfo\0.shstrtab\0";
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(MAGIC);
        b[4] = 2;
        b[5] = 1;
        let modinfo_off = b.len();
        b.extend_from_slice(modinfo);
        let strtab_off = b.len();
        b.extend_from_slice(shstrtab);
        let shoff = b.len();
        let mut sh = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            b.extend_from_slice(&h);
        };
        sh(0, 0, 0);
        sh(1, modinfo_off, modinfo.len());
        sh(10, strtab_off, shstrtab.len());
        b[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        b[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        b[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        b[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        b
    }

    #[test]
    fn modinfo_depends_are_read() {
        let ko = elf_with_modinfo(b"license=GPL\0depends=virtio,virtio_ring\0vermagic=6.1\0");
        assert_eq!(
            module_depends(&ko).unwrap(),
            ["virtio".to_string(), "virtio_ring".to_string()]
        );
    }

    #[test]
    fn empty_depends_is_an_empty_list() {
        let ko = elf_with_modinfo(b"depends=\0");
        assert_eq!(module_depends(&ko).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn truncated_elf_is_not_parsed() {
        let ko = elf_with_modinfo(b"depends=a\0");
        assert_eq!(module_depends(&ko[..100]), None);
        assert_eq!(section(b"not elf", ".modinfo"), None);
    }

    pub(crate) fn elf_with_program_headers(types: &[u32]) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(MAGIC);
        b[4] = 2;
        b[5] = 1;
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&(types.len() as u16).to_le_bytes());
        for t in types {
            let mut h = vec![0u8; 56];
            h[..4].copy_from_slice(&t.to_le_bytes());
            b.extend_from_slice(&h);
        }
        b
    }

    #[test]
    fn interpreter_header_means_dynamic() {
        assert!(is_static(&elf_with_program_headers(&[1, 1])));
        assert!(!is_static(&elf_with_program_headers(&[6, PT_INTERP, 1])));
        assert!(!is_static(b"#!/bin/sh\n"));
    }
}
