//! Image and package name rules.

use super::error::ImageError;

/// The image `banger image build` makes when no name is given.
pub const DEFAULT_IMAGE: &str = "default";

/// Checks an image name: a DNS label (1-63 of `a-z`, `0-9`, `-`, starting with a letter
/// or digit and not ending with `-`). Names become directory names, so this also keeps
/// them free of `/`, `.` and anything hidden.
pub fn validate_name(name: &str) -> Result<(), ImageError> {
    let invalid = |reason| ImageError::InvalidName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > 63 {
        return Err(invalid("it is longer than 63 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(invalid("use only lowercase letters, digits and '-'"));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(invalid("it must start and end with a letter or digit"));
    }
    Ok(())
}

/// Checks a Debian package name (policy 5.6.7), so it cannot smuggle options into
/// debootstrap's `--include`.
pub(crate) fn validate_package(name: &str) -> Result<(), ImageError> {
    let ok = name.len() >= 2
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.')
        });
    if ok {
        Ok(())
    } else {
        Err(ImageError::InvalidInput {
            what: "package name",
            value: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_are_accepted() {
        assert!(validate_name("default").is_ok());
        assert!(validate_name("web-2").is_ok());
        assert!(validate_name("9lives").is_ok());
        assert!(validate_name(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn unsafe_or_odd_names_are_refused() {
        for bad in [
            "", "-a", "a-", "A", "a.b", "a/b", "..", ".hidden", "a b", "é",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(validate_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn package_names_follow_debian_policy() {
        assert!(validate_package("libc6").is_ok());
        assert!(validate_package("g++").is_ok());
        assert!(validate_package("python3.11").is_ok());
        assert!(validate_package("--foo").is_err());
        assert!(validate_package("a,b").is_err());
        assert!(validate_package("x").is_err());
    }
}
