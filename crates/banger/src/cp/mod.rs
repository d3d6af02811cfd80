//! Copying a file or a directory tree between the host and a VM (`banger vm cp`). The
//! data streams as a tar through the agent's exec stream (the `tar` crate here, GNU tar
//! in the guest), with no temp copy on either side.
//!
//! Like `cp -r` (directories need no flag): when the destination is an existing
//! directory the copy goes inside it under the source's name; otherwise it is created as
//! the destination (a file replaces a file). Several sources go into the destination,
//! which must then be an existing directory; two sources with the same name are refused
//! before anything is copied.

mod error;
mod guest;
mod pack;
mod spec;
mod unpack;

use std::ffi::OsString;
use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use banger_wire::agent::CHUNK;
use banger_wire::user::GuestUser;
use tokio_util::io::SyncIoBridge;

use self::guest::Found;
use self::spec::GuestPath;
use self::unpack::Target;
use crate::client::Client;
use crate::workspace::exec::{CaptureError, Runner, Vm, VmAs};

pub use self::error::CopyError;
pub use self::spec::{parse, Plan};

/// An entry a copy left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// A host socket, FIFO or device.
    Host(PathBuf),
    /// A FIFO or device in the guest's archive.
    Guest(String),
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skipped::Host(path) => write!(
                f,
                "skipped {}: not a file, directory or symlink",
                path.display()
            ),
            Skipped::Guest(entry) => {
                write!(f, "skipped {entry}: FIFOs and devices are not copied")
            }
        }
    }
}

/// Where relative guest paths of VM `name` start: the home of the user the copy runs as
/// (`user`, else the VM's default user, else root), as `scp` to that user would.
async fn guest_home(
    client: &Client,
    name: &str,
    user: Option<&GuestUser>,
) -> Result<String, CopyError> {
    if let Some(user) = user {
        return Ok(user.home());
    }
    let vm = crate::vm::show(client, name)
        .await
        .map_err(|e| CopyError::Capture(CaptureError::Cli(e)))?;
    Ok(vm.user.map_or_else(|| "/root".to_string(), |u| u.home()))
}

/// Carries out one copy as `user` (else as the VM's default user); answers what it
/// left out.
pub async fn copy(
    client: &Client,
    plan: Plan,
    user: Option<GuestUser>,
) -> Result<Vec<Skipped>, CopyError> {
    let several = plan.several();
    let home = match &plan {
        Plan::Upload { vm, .. } | Plan::Download { vm, .. } if plan.relative() => {
            guest_home(client, vm, user.as_ref()).await?
        }
        _ => "/".to_string(),
    };
    let mut skipped = Vec::new();
    match plan {
        Plan::Upload { locals, vm, guest } => {
            let guest = GuestPath::new(&guest, &home);
            let vm = VmAs {
                vm: Vm { client, name: &vm },
                user,
            };
            if several {
                // Every source is checked before the first is copied.
                if let Some(gone) = locals.iter().find(|l| !l.exists()) {
                    return Err(CopyError::SourceMissing {
                        path: gone.display().to_string(),
                    });
                }
                let names: Result<Vec<_>, _> = locals.iter().map(|l| local_name(l)).collect();
                distinct(names?.iter().map(|n| n.to_string_lossy().into_owned()))?;
                if guest::probe(&vm, &guest).await?.found != Found::Dir {
                    return Err(CopyError::NotADir {
                        path: format!("{}:{}", vm.name(), guest.as_str()),
                    });
                }
            }
            for local in &locals {
                skipped.extend(upload(&vm, local, &guest).await?);
            }
        }
        Plan::Download { vm, guests, local } => {
            let guests: Vec<_> = guests.iter().map(|g| GuestPath::new(g, &home)).collect();
            let vm = VmAs {
                vm: Vm { client, name: &vm },
                user,
            };
            if several {
                distinct(
                    guests
                        .iter()
                        .map(|g| g.split().map_or("", |(_, n)| n).to_string()),
                )?;
                if !local.is_dir() {
                    return Err(CopyError::NotADir {
                        path: local.display().to_string(),
                    });
                }
            }
            for guest in &guests {
                skipped.extend(download(&vm, guest, &local).await?);
            }
        }
    }
    Ok(skipped)
}

/// Refuses sources that would land on the same path of the destination directory.
fn distinct(names: impl Iterator<Item = String>) -> Result<(), CopyError> {
    let mut seen = std::collections::HashSet::new();
    for name in names {
        if !seen.insert(name.clone()) {
            return Err(CopyError::SameName { name });
        }
    }
    Ok(())
}

async fn upload(vm: &VmAs<'_>, local: &Path, guest: &GuestPath) -> Result<Vec<Skipped>, CopyError> {
    let meta = fs_err::metadata(local).map_err(|source| match source.kind() {
        ErrorKind::NotFound => CopyError::SourceMissing {
            path: local.display().to_string(),
        },
        _ => CopyError::Read {
            path: local.to_path_buf(),
            source,
        },
    })?;
    let name = local_name(local)?;
    let shown = |p: &str| format!("{}:{p}", vm.name());
    let (dir, top) = match guest::probe(vm, guest).await?.found {
        Found::Dir => (guest.as_str().to_string(), name),
        Found::Other if meta.is_dir() => {
            return Err(CopyError::DirOverFile {
                src: local.display().to_string(),
                dst: shown(guest.as_str()),
            })
        }
        Found::Other | Found::Absent => {
            let (dir, base) = guest.split().ok_or_else(|| CopyError::NoName {
                path: shown(guest.as_str()),
            })?;
            (dir.to_string(), OsString::from(base))
        }
        Found::NoParent => {
            let dir = guest.split().map_or("/", |(d, _)| d);
            return Err(CopyError::DirMissing { path: shown(dir) });
        }
    };
    let (archive, packer) = pack::spawn(local.to_path_buf(), top);
    let sent = guest::extract(vm, &dir, archive).await;
    let packed = match (packer.await?, sent) {
        // A host-side failure explains a broken stream better than the stream does.
        (Err(e), _) if !matches!(e, CopyError::Closed) => return Err(e),
        (_, Err(e)) | (Err(e), Ok(())) => return Err(e),
        (Ok(packed), Ok(())) => packed,
    };
    Ok(packed.skipped.into_iter().map(Skipped::Host).collect())
}

async fn download(
    vm: &VmAs<'_>,
    guest: &GuestPath,
    local: &Path,
) -> Result<Vec<Skipped>, CopyError> {
    let shown = format!("{}:{}", vm.name(), guest.as_str());
    let no_name = || CopyError::NoName {
        path: shown.clone(),
    };
    let (_, name) = guest.split().ok_or_else(no_name)?;
    // A symlink named on the command line is followed: its target is what is copied.
    let probe = guest::probe(vm, guest).await?;
    let (src_is_dir, resolved) = match (probe.found, probe.resolved) {
        (Found::Dir, Some(r)) => (true, r),
        (Found::Other, Some(r)) => (false, r),
        _ => return Err(CopyError::SourceMissing { path: shown }),
    };
    let (dir, from) = resolved.split().ok_or_else(no_name)?;
    let target = local_target(vm.name(), local, (from, name), src_is_dir, &shown)?;

    let (mut tx, rx) = tokio::io::duplex(4 * CHUNK);
    let rx = SyncIoBridge::new(rx);
    let unpacker = {
        let target = target.clone();
        tokio::task::spawn_blocking(move || unpack::unpack(rx, &target))
    };
    let fetched = guest::create(vm, dir, from, &mut tx).await;
    drop(tx);
    let unpacked = match (unpacker.await?, fetched) {
        // A guest tar that failed midway leaves a truncated archive: its own error says why.
        (Err(CopyError::Malformed { .. }), Err(e)) => return Err(e),
        (Err(e), _) | (Ok(_), Err(e)) => return Err(e),
        (Ok(unpacked), Ok(())) => unpacked,
    };
    Ok(unpacked.skipped.into_iter().map(Skipped::Guest).collect())
}

/// Where a download lands for the host path `local`. `from` is the name the archive
/// holds and `name` the one that was asked for (they differ for a symlink).
fn local_target(
    vm: &str,
    local: &Path,
    (from, name): (&str, &str),
    src_is_dir: bool,
    shown: &str,
) -> Result<Target, CopyError> {
    let target = |root: PathBuf, to: OsString| Target {
        vm: vm.to_string(),
        root,
        from: from.into(),
        to,
        umask: unpack::current_umask(),
    };
    let parent = match local.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let own_name = || {
        local
            .file_name()
            .map(OsString::from)
            .ok_or_else(|| CopyError::NoName {
                path: local.display().to_string(),
            })
    };
    match fs_err::metadata(local) {
        Ok(m) if m.is_dir() => Ok(target(local.to_path_buf(), name.into())),
        Ok(_) if src_is_dir => Err(CopyError::DirOverFile {
            src: shown.to_string(),
            dst: local.display().to_string(),
        }),
        Ok(_) => Ok(target(parent, own_name()?)),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if !parent.is_dir() {
                return Err(CopyError::DirMissing {
                    path: parent.display().to_string(),
                });
            }
            Ok(target(parent, own_name()?))
        }
        Err(source) => Err(CopyError::Read {
            path: local.to_path_buf(),
            source,
        }),
    }
}

/// The name a host source gets in the guest: its last component (`.` and `..`
/// resolved).
fn local_name(local: &Path) -> Result<OsString, CopyError> {
    if let Some(name) = local.file_name() {
        return Ok(name.to_owned());
    }
    let abs = fs_err::canonicalize(local).map_err(|source| CopyError::Read {
        path: local.to_path_buf(),
        source,
    })?;
    abs.file_name()
        .map(OsString::from)
        .ok_or_else(|| CopyError::NoName {
            path: local.display().to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_into_an_existing_directory_keeps_the_guest_name() {
        let tmp = tempfile::tempdir().unwrap();

        let t = local_target("web", tmp.path(), ("etc", "etc"), true, "web:/etc").unwrap();

        assert_eq!(
            (t.root.as_path(), t.to.as_os_str()),
            (tmp.path(), "etc".as_ref())
        );
    }

    #[test]
    fn a_followed_symlink_lands_under_the_name_that_was_asked_for() {
        let tmp = tempfile::tempdir().unwrap();

        let t = local_target("web", tmp.path(), ("vim.basic", "editor"), false, "web:/x").unwrap();

        assert_eq!(
            (t.from.as_os_str(), t.to.as_os_str()),
            ("vim.basic".as_ref(), "editor".as_ref())
        );
    }

    #[test]
    fn a_download_to_a_new_name_is_renamed() {
        let tmp = tempfile::tempdir().unwrap();

        let t = local_target(
            "web",
            &tmp.path().join("copy"),
            ("etc", "etc"),
            true,
            "web:/etc",
        )
        .unwrap();

        assert_eq!(
            (t.root.as_path(), t.to.as_os_str()),
            (tmp.path(), "copy".as_ref())
        );
    }

    #[test]
    fn a_download_into_a_missing_directory_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("no such dir");

        let err = local_target("web", &missing.join("f"), ("f", "f"), false, "web:/f").unwrap_err();

        assert_eq!(
            err.to_string(),
            format!("directory {} does not exist", missing.display())
        );
    }

    #[test]
    fn a_directory_does_not_replace_a_host_file() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs_err::write(&file, "x").unwrap();

        let err = local_target("web", &file, ("etc", "etc"), true, "web:/etc").unwrap_err();

        assert!(matches!(err, CopyError::DirOverFile { .. }), "{err:?}");
    }

    #[test]
    fn two_sources_of_one_name_are_refused_before_any_copy() {
        let names = ["a", "dir", "a"].map(String::from);

        let err = distinct(names.into_iter()).unwrap_err();

        assert!(
            matches!(err, CopyError::SameName { ref name } if name == "a"),
            "{err:?}"
        );
        assert!(distinct(["a", "b"].map(String::from).into_iter()).is_ok());
    }

    #[test]
    fn a_dot_source_takes_its_directory_name() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("proj ü");
        fs_err::create_dir(&dir).unwrap();

        assert_eq!(local_name(&dir.join(".")).unwrap(), "proj ü");
        assert!(local_name(Path::new("/")).is_err());
    }
}
