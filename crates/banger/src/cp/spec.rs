//! What `banger vm cp SRC... DST` was asked: which side is the VM, and which paths.

use std::path::PathBuf;

use crate::error::CliError;

/// One copy, host → guest or guest → host. With several sources the destination must
/// be an existing directory, which receives each of them under its own name.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    Upload {
        locals: Vec<PathBuf>,
        vm: String,
        guest: String,
    },
    Download {
        vm: String,
        guests: Vec<String>,
        local: PathBuf,
    },
}

impl Plan {
    /// Whether the destination must be a directory (there are several sources).
    pub fn several(&self) -> bool {
        match self {
            Plan::Upload { locals, .. } => locals.len() > 1,
            Plan::Download { guests, .. } => guests.len() > 1,
        }
    }

    /// Whether a guest path is relative (it starts at the home of the VM's user).
    pub fn relative(&self) -> bool {
        let relative = |p: &String| !p.starts_with('/');
        match self {
            Plan::Upload { guest, .. } => relative(guest),
            Plan::Download { guests, .. } => guests.iter().any(relative),
        }
    }
}

/// An absolute, normalized guest path (no trailing `/` except for `/` itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPath(String);

impl GuestPath {
    /// `path` as typed after `NAME:`; relative paths start at `home`.
    pub fn new(path: &str, home: &str) -> GuestPath {
        let abs = match path {
            "" => home.to_string(),
            p if p.starts_with('/') => p.to_string(),
            p => format!("{home}/{p}"),
        };
        let trimmed = abs.trim_end_matches('/');
        GuestPath(if trimmed.is_empty() {
            "/".into()
        } else {
            trimmed.into()
        })
    }

    /// An absolute path the guest answered, normalized.
    pub fn resolved(path: &str) -> GuestPath {
        GuestPath::new(path, "/")
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

/// Reads the arguments, the last being the destination: either every source is on the
/// host and the destination names a VM, or every source is in one VM and the
/// destination is on the host.
pub fn parse(args: &[String]) -> Result<Plan, CliError> {
    let hint = Some("name the guest side as NAME:/path; a host path with a `:` can start with ./");
    let (dst, srcs) = match args.split_last() {
        Some((dst, srcs)) if !srcs.is_empty() => (dst, srcs),
        _ => return Err(CliError::usage("give a source and a destination", hint)),
    };
    match remote(dst) {
        Some((vm, path)) => {
            if let Some(src) = srcs.iter().find(|s| remote(s).is_some()) {
                return Err(CliError::usage(
                    format!(
                        "both {src:?} and {dst:?} name a VM; copy between two VMs through the host"
                    ),
                    hint,
                ));
            }
            Ok(Plan::Upload {
                locals: srcs.iter().map(PathBuf::from).collect(),
                vm: vm.to_string(),
                guest: path.to_string(),
            })
        }
        None => {
            let vm = match srcs.first().map(|s| (s, remote(s))) {
                Some((_, Some((vm, _)))) => vm,
                src => {
                    let src = src.map_or("", |(s, _)| s.as_str());
                    return Err(CliError::usage(
                        format!("neither {src:?} nor {dst:?} names a VM"),
                        hint,
                    ));
                }
            };
            let mut guests = Vec::with_capacity(srcs.len());
            for src in srcs {
                match remote(src) {
                    Some((name, path)) if name == vm => guests.push(path.to_string()),
                    Some(_) => {
                        return Err(CliError::usage(
                            format!("{src:?} is not in vm {vm}; copy from one VM at a time"),
                            None,
                        ))
                    }
                    None => {
                        return Err(CliError::usage(
                            format!("{src:?} is on the host but {dst:?} is too; every source must be in the VM"),
                            hint,
                        ))
                    }
                }
            }
            Ok(Plan::Download {
                vm: vm.to_string(),
                guests,
                local: PathBuf::from(dst),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_side_with_a_vm_name_is_the_guest() {
        assert_eq!(
            parse(&args(&["./my dir", "web:/srv/ünï x"])).unwrap(),
            Plan::Upload {
                locals: vec!["./my dir".into()],
                vm: "web".into(),
                guest: "/srv/ünï x".into(),
            }
        );
        assert_eq!(
            parse(&args(&["web:/etc/hosts", "out"])).unwrap(),
            Plan::Download {
                vm: "web".into(),
                guests: vec!["/etc/hosts".into()],
                local: "out".into(),
            }
        );
    }

    #[test]
    fn several_sources_go_into_the_last_argument() {
        let up = parse(&args(&["a", "b dir", "web:/srv/"])).unwrap();
        let down = parse(&args(&["web:/x", "web:y", "./dir/"])).unwrap();

        assert_eq!(
            up,
            Plan::Upload {
                locals: vec!["a".into(), "b dir".into()],
                vm: "web".into(),
                guest: "/srv/".into(),
            }
        );
        assert_eq!(
            down,
            Plan::Download {
                vm: "web".into(),
                guests: vec!["/x".into(), "y".into()],
                local: "./dir/".into(),
            }
        );
        assert!(up.several() && down.several());
        assert!(!up.relative() && down.relative());
    }

    #[test]
    fn a_colon_after_a_slash_is_part_of_a_host_path() {
        let err = parse(&args(&["./a:b", "/tmp/c:d"])).unwrap_err();
        assert!(err.to_string().contains("neither"), "{err}");
    }

    #[test]
    fn mixed_or_foreign_sources_are_refused() {
        for bad in [
            &["a:/x", "b:/y"][..],
            &["f", "web:/x", "web:/dst"],
            &["web:/x", "f", "./dir"],
            &["web:/x", "db:/y", "./dir"],
            &["web:/x"],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn guest_paths_are_made_absolute_from_the_home() {
        assert_eq!(GuestPath::new("", "/root").as_str(), "/root");
        assert_eq!(
            GuestPath::new("notes/", "/home/dev").as_str(),
            "/home/dev/notes"
        );
        assert_eq!(GuestPath::new("///", "/home/dev").as_str(), "/");
        assert_eq!(GuestPath::new("/a b//", "/home/dev").as_str(), "/a b");
    }

    #[test]
    fn split_names_the_last_component_and_its_directory() {
        assert_eq!(
            GuestPath::new("/etc/hosts", "/root").split(),
            Some(("/etc", "hosts"))
        );
        assert_eq!(GuestPath::new("/srv", "/root").split(), Some(("/", "srv")));
        assert_eq!(GuestPath::new("/", "/root").split(), None);
        assert_eq!(GuestPath::new("/tmp/..", "/root").split(), None);
        assert_eq!(GuestPath::new("/tmp/.", "/root").split(), None);
    }
}
