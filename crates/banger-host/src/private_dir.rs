//! A per-user runtime directory (daemon socket, VM sockets) is trusted only when it is
//! the user's own and closed to everyone else. Another user who made it first could
//! otherwise listen on the socket the CLI connects to, or reach the daemon.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use banger_wire::{Diagnostic, ErrorCode};

/// Why a runtime directory is not used.
#[derive(Debug, thiserror::Error)]
pub enum PrivateDirError {
    #[error("runtime directory {} belongs to uid {owner}, not to you (uid {uid})", path.display())]
    NotOwned { path: PathBuf, owner: u32, uid: u32 },
    #[error("runtime directory {} has mode {mode:04o}; banger wants 0700", path.display())]
    Open { path: PathBuf, mode: u32 },
    #[error("runtime directory {} is not a directory", path.display())]
    NotDir { path: PathBuf },
    #[error("cannot create runtime directory {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Diagnostic for PrivateDirError {
    fn code(&self) -> ErrorCode {
        match self {
            PrivateDirError::NotOwned { .. }
            | PrivateDirError::Open { .. }
            | PrivateDirError::NotDir { .. } => ErrorCode::PermissionDenied,
            PrivateDirError::Io { .. } => ErrorCode::HostFailed,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            PrivateDirError::NotOwned { .. } | PrivateDirError::NotDir { .. } => Some(
                "someone else may have made it to catch your daemon's socket; have it removed, \
                 or point BANGER_RUNTIME_DIR at a directory of your own"
                    .into(),
            ),
            PrivateDirError::Open { path, .. } => {
                Some(format!("run `chmod 700 {}`", path.display()))
            }
            PrivateDirError::Io { .. } => {
                Some("point BANGER_RUNTIME_DIR at a directory of your own".into())
            }
        }
    }
}

/// Creates `dir` (mode 0700) if missing, then checks that it is a real directory owned
/// by `uid` with no access for group or others. Symlinks are not followed.
pub fn ensure(dir: &Path, uid: u32) -> Result<(), PrivateDirError> {
    let io = |source| PrivateDirError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if let Some(parent) = dir.parent() {
        fs_err::create_dir_all(parent).map_err(io)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io(e)),
        _ => {}
    }
    check(dir, uid)
}

/// Checks an existing `dir` as [`ensure`] does.
pub fn check(dir: &Path, uid: u32) -> Result<(), PrivateDirError> {
    let meta = fs_err::symlink_metadata(dir).map_err(|source| PrivateDirError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.to_path_buf();
    if !meta.is_dir() {
        return Err(PrivateDirError::NotDir { path });
    }
    if meta.uid() != uid {
        return Err(PrivateDirError::NotOwned {
            path,
            owner: meta.uid(),
            uid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PrivateDirError::Open { path, mode });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[test]
    fn a_missing_dir_is_made_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/run");

        ensure(&dir, me()).unwrap();

        let mode = fs_err::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_dir_open_to_others_is_refused_with_a_chmod_hint() {
        let root = tempfile::tempdir().unwrap();
        fs_err::set_permissions(root.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();

        let err = ensure(root.path(), me()).unwrap_err();

        assert!(
            matches!(err, PrivateDirError::Open { mode: 0o1777, .. }),
            "{err}"
        );
        assert!(err.hint().unwrap().starts_with("run `chmod 700 "));
    }

    #[test]
    fn a_dir_of_another_uid_is_refused() {
        let root = tempfile::tempdir().unwrap();
        fs_err::set_permissions(root.path(), std::fs::Permissions::from_mode(0o700)).unwrap();

        let err = check(root.path(), me() + 1).unwrap_err();

        assert!(matches!(err, PrivateDirError::NotOwned { .. }), "{err}");
        assert!(err.hint().unwrap().contains("BANGER_RUNTIME_DIR"));
    }

    #[test]
    fn a_symlink_to_a_private_dir_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real");
        ensure(&real, me()).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();

        let err = check(&link, me()).unwrap_err();

        assert!(matches!(err, PrivateDirError::NotDir { .. }), "{err}");
    }
}
