//! Registry references next to local image names. A local name is a DNS label, so a
//! `/`, `:`, `@` or `.` marks a registry reference (`python:3.12`, `ghcr.io/o/i`); the
//! image a reference is pulled into is named by [`local_name`], the same on both ends,
//! so `vm run --image REF` finds it again.

/// Whether `image` is a registry reference rather than a local image name.
pub fn is_reference(image: &str) -> bool {
    image.contains(['/', ':', '@', '.'])
}

/// The local image name of a reference: lowercase letters and digits, runs of anything
/// else one `-` (`localhost:5000/x:1` → `localhost-5000-x-1`). Past 63 characters it is
/// cut and ends in a hash of the whole reference, so two long references stay apart.
pub fn local_name(reference: &str) -> String {
    let mut name = String::new();
    for c in reference.chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    let name = name.trim_end_matches('-');
    if name.len() <= 63 {
        return name.to_string();
    }
    let hash = reference.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{}-{hash:08x}", name[..54].trim_end_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_told_from_local_names() {
        assert!(is_reference("python:3.12"));
        assert!(is_reference("localhost:5000/x:1"));
        assert!(is_reference("ghcr.io/org/img"));
        assert!(!is_reference("default"));
        assert!(!is_reference("my-image-2"));
    }

    #[test]
    fn local_names_are_dns_labels() {
        assert_eq!(local_name("localhost:5000/x:1"), "localhost-5000-x-1");
        assert_eq!(local_name("python:3.12"), "python-3-12");
        assert_eq!(
            local_name("docker.io/library/Node:22"),
            "docker-io-library-node-22"
        );
        let long = format!("ghcr.io/org/img@sha256:{}", "ab".repeat(32));
        let name = local_name(&long);
        assert_eq!(name.len(), 63, "{name}");
        assert_ne!(name, local_name(&long.replace("ab", "ba")));
    }
}
