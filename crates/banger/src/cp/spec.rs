//! What `banger vm cp SRC DST` was asked: which side is the VM, and which paths.

use std::path::PathBuf;

use crate::error::CliError;

/// Where relative guest paths start (the agent's default working directory).
pub const GUEST_HOME: &str = "/root";

/// One copy, host → guest or guest → host.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    Upload {
        local: PathBuf,
        vm: String,
        guest: GuestPath,
    },
    Download {
        vm: String,
        guest: GuestPath,
        local: PathBuf,
    },
}

/// An absolute, normalized guest path (no trailing `/` except for `/` itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPath(String);

impl GuestPath {
    /// `path` as typed after `NAME:`; relative paths start at [`GUEST_HOME`].
    pub fn new(path: &str) -> GuestPath {
        let abs = match path {
            "" => GUEST_HOME.to_string(),
            p if p.starts_with('/') => p.to_string(),
            p => format!("{GUEST_HOME}/{p}"),
        };
        let trimmed = abs.trim_end_matches('/');
        GuestPath(if trimmed.is_empty() {
            "/".into()
        } else {
            trimmed.into()
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The directory holding this path and its last component; `None` for `/`, `.`
    /// and `..`, which name no single entry of a directory.
    pub fn split(&self) -> Option<(&str, &str)> {
        let (dir, base) = self.0.rsplit_once('/')?;
        if base.is_empty() || base == "." || base == ".." {
            return None;
        }
        Some((if dir.is_empty() { "/" } else { dir }, base))
    }
}

/// `NAME:path` when the text before the first `:` is a VM name (it holds no `/`).
fn remote(arg: &str) -> Option<(&str, &str)> {
    let (name, path) = arg.split_once(':')?;
    if name.is_empty() || name.contains('/') {
        return None;
    }
    Some((name, path))
}

/// Reads the two arguments: exactly one must name a VM.
pub fn parse(src: &str, dst: &str) -> Result<Plan, CliError> {
    let hint = Some("name the guest side as NAME:/path; a host path with a `:` can start with ./");
    match (remote(src), remote(dst)) {
        (None, Some((vm, path))) => Ok(Plan::Upload {
            local: PathBuf::from(src),
            vm: vm.to_string(),
            guest: GuestPath::new(path),
        }),
        (Some((vm, path)), None) => Ok(Plan::Download {
            vm: vm.to_string(),
            guest: GuestPath::new(path),
            local: PathBuf::from(dst),
        }),
        (Some(_), Some(_)) => Err(CliError::usage(
            format!("both {src:?} and {dst:?} name a VM; copy between two VMs through the host"),
            hint,
        )),
        (None, None) => Err(CliError::usage(
            format!("neither {src:?} nor {dst:?} names a VM"),
            hint,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_side_with_a_vm_name_is_the_guest() {
        assert_eq!(
            parse("./my dir", "web:/srv/ünï x").unwrap(),
            Plan::Upload {
                local: "./my dir".into(),
                vm: "web".into(),
                guest: GuestPath("/srv/ünï x".into()),
            }
        );
        assert_eq!(
            parse("web:/etc/hosts", "out").unwrap(),
            Plan::Download {
                vm: "web".into(),
                guest: GuestPath("/etc/hosts".into()),
                local: "out".into(),
            }
        );
    }

    #[test]
    fn a_colon_after_a_slash_is_part_of_a_host_path() {
        let err = parse("./a:b", "/tmp/c:d").unwrap_err();
        assert!(err.to_string().contains("neither"), "{err}");
    }

    #[test]
    fn two_vms_are_refused() {
        assert!(parse("a:/x", "b:/y").is_err());
    }

    #[test]
    fn guest_paths_are_made_absolute_from_the_home() {
        assert_eq!(GuestPath::new("").as_str(), "/root");
        assert_eq!(GuestPath::new("notes/").as_str(), "/root/notes");
        assert_eq!(GuestPath::new("///").as_str(), "/");
        assert_eq!(GuestPath::new("/a b//").as_str(), "/a b");
    }

    #[test]
    fn split_names_the_last_component_and_its_directory() {
        assert_eq!(
            GuestPath::new("/etc/hosts").split(),
            Some(("/etc", "hosts"))
        );
        assert_eq!(GuestPath::new("/srv").split(), Some(("/", "srv")));
        assert_eq!(GuestPath::new("/").split(), None);
        assert_eq!(GuestPath::new("/tmp/..").split(), None);
        assert_eq!(GuestPath::new("/tmp/.").split(), None);
    }
}
