//! The file names of an image, as the daemon stores it and as an image bundle carries
//! it: `image export` asks for each of [`FILES`] (gzip-compressed as `<file>.gz`) and
//! then [`MANIFEST`], and `image pull` reads them back the same way.

pub const VMLINUX: &str = "vmlinux";
pub const BZIMAGE: &str = "bzImage";
pub const INITRD: &str = "initrd.img";
pub const ROOTFS: &str = "rootfs.ext4";
pub const MANIFEST: &str = "manifest.json";
/// Every file of an image besides the manifest.
pub const FILES: [&str; 4] = [VMLINUX, BZIMAGE, INITRD, ROOTFS];
