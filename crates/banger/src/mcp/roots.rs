//! The host directories MCP tools may touch, fixed when the server starts
//! (`banger mcp --allow-path DIR`).
//!
//! A path is allowed only if it is absolute, has no `..` part, and resolves (every
//! symlink followed) to a place inside one of the roots. A symlink inside a root that
//! points out of it is therefore refused. With no roots, every host path is refused.

use std::path::{Component, Path, PathBuf};

use banger_wire::{Diagnostic, ErrorCode};

use crate::error::CliError;

/// Why `--allow-path` was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("--allow-path {path} cannot be used")]
    Unusable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--allow-path {path} is not a directory")]
    NotADirectory { path: PathBuf },
}

/// Why a tool may not use a host path.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("host paths are disabled: this server was started without --allow-path")]
    NoRoots,
    #[error("host path {path} is relative; give an absolute path")]
    Relative { path: PathBuf },
    #[error("host path {path} contains `..`")]
    DotDot { path: PathBuf },
    #[error("host path {path} cannot be resolved")]
    Unresolvable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("host path {path} is outside the allowed directories ({})", show(.roots))]
    Outside {
        path: PathBuf,
        /// What it resolved to, when symlinks changed it.
        resolved: Option<PathBuf>,
        roots: Vec<PathBuf>,
    },
    #[error("host path {path} does not name a file")]
    NoFileName { path: PathBuf },
}

fn show(roots: &[PathBuf]) -> String {
    let shown: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    shown.join(", ")
}

impl From<RootError> for CliError {
    fn from(e: RootError) -> CliError {
        CliError::failed(e)
    }
}

impl Diagnostic for RootError {
    fn code(&self) -> ErrorCode {
        ErrorCode::InvalidArgument
    }

    fn hint(&self) -> Option<String> {
        Some("--allow-path takes an existing directory".into())
    }
}

impl Diagnostic for PathError {
    fn code(&self) -> ErrorCode {
        match self {
            PathError::Relative { .. }
            | PathError::DotDot { .. }
            | PathError::NoFileName { .. } => ErrorCode::InvalidArgument,
            PathError::Unresolvable { .. } => ErrorCode::NotFound,
            PathError::NoRoots | PathError::Outside { .. } => ErrorCode::PermissionDenied,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            PathError::NoRoots => Some(
                "restart the server as `banger mcp --allow-path DIR` to let tools use host files below DIR"
                    .into(),
            ),
            PathError::Outside {
                resolved: Some(resolved),
                ..
            } => Some(format!(
                "it resolves through a symlink to {}; use a path inside an allowed directory",
                resolved.display()
            )),
            PathError::Outside { .. } => {
                Some("use a path inside one of the allowed directories".into())
            }
            _ => None,
        }
    }
}

/// The canonical directories host-path tools are confined to.
#[derive(Debug, Clone, Default)]
pub struct AllowedRoots {
    roots: Vec<PathBuf>,
}

impl AllowedRoots {
    /// Canonicalizes each directory; each must exist.
    pub fn new(dirs: &[PathBuf]) -> Result<AllowedRoots, RootError> {
        let mut roots = Vec::new();
        for dir in dirs {
            let root = fs_err::canonicalize(dir).map_err(|source| RootError::Unusable {
                path: dir.clone(),
                source,
            })?;
            if !root.is_dir() {
                return Err(RootError::NotADirectory { path: dir.clone() });
            }
            if !roots.contains(&root) {
                roots.push(root);
            }
        }
        Ok(AllowedRoots { roots })
    }

    /// An existing path, resolved: it and everything it resolves through stays inside
    /// a root.
    pub fn existing(&self, path: &Path) -> Result<PathBuf, PathError> {
        self.precheck(path)?;
        let resolved = fs_err::canonicalize(path).map_err(|source| PathError::Unresolvable {
            path: path.to_path_buf(),
            source,
        })?;
        self.inside(path, resolved)
    }

    /// A file that may not exist yet: its directory must exist and resolve inside a
    /// root; if the file exists, it must resolve inside one too.
    pub fn new_file(&self, path: &Path) -> Result<PathBuf, PathError> {
        self.precheck(path)?;
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(PathError::NoFileName {
                path: path.to_path_buf(),
            });
        };
        let dir = self.existing(dir)?;
        let target = dir.join(name);
        match fs_err::symlink_metadata(&target) {
            Ok(_) => self.existing(&target),
            Err(_) => Ok(target),
        }
    }

    fn precheck(&self, path: &Path) -> Result<(), PathError> {
        if self.roots.is_empty() {
            return Err(PathError::NoRoots);
        }
        if !path.is_absolute() {
            return Err(PathError::Relative {
                path: path.to_path_buf(),
            });
        }
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(PathError::DotDot {
                path: path.to_path_buf(),
            });
        }
        Ok(())
    }

    fn inside(&self, path: &Path, resolved: PathBuf) -> Result<PathBuf, PathError> {
        if self.roots.iter().any(|root| resolved.starts_with(root)) {
            return Ok(resolved);
        }
        Err(PathError::Outside {
            path: path.to_path_buf(),
            resolved: (resolved != path).then_some(resolved),
            roots: self.roots.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::symlink;

    use super::*;

    /// `<tmp>/allowed` (the root, holding `file`) next to `<tmp>/outside/secret`.
    fn layout() -> (tempfile::TempDir, PathBuf, AllowedRoots) {
        let tmp = tempfile::tempdir().unwrap();
        let base = fs_err::canonicalize(tmp.path()).unwrap();
        fs_err::create_dir_all(base.join("allowed/sub")).unwrap();
        fs_err::create_dir_all(base.join("outside")).unwrap();
        fs_err::write(base.join("allowed/file"), "ok").unwrap();
        fs_err::write(base.join("outside/secret"), "no").unwrap();
        let roots = AllowedRoots::new(&[base.join("allowed")]).unwrap();
        (tmp, base, roots)
    }

    #[test]
    fn a_path_inside_a_root_resolves() {
        let (_tmp, base, roots) = layout();

        let got = roots.existing(&base.join("allowed/file")).unwrap();

        assert_eq!(got, base.join("allowed/file"));
    }

    #[test]
    fn the_root_itself_is_allowed() {
        let (_tmp, base, roots) = layout();

        assert_eq!(
            roots.existing(&base.join("allowed")).unwrap(),
            base.join("allowed")
        );
    }

    #[test]
    fn a_path_outside_every_root_is_refused() {
        let (_tmp, base, roots) = layout();

        let err = roots.existing(&base.join("outside/secret")).unwrap_err();

        assert!(
            matches!(err, PathError::Outside { resolved: None, .. }),
            "{err:?}"
        );
        assert_eq!(err.code(), ErrorCode::PermissionDenied);
    }

    #[test]
    fn a_sibling_sharing_the_root_prefix_is_outside() {
        let (_tmp, base, roots) = layout();
        fs_err::create_dir_all(base.join("allowed-not")).unwrap();

        let err = roots.existing(&base.join("allowed-not")).unwrap_err();

        assert!(matches!(err, PathError::Outside { .. }), "{err:?}");
    }

    #[test]
    fn a_symlink_escaping_a_root_is_refused_and_named() {
        let (_tmp, base, roots) = layout();
        symlink(base.join("outside"), base.join("allowed/escape")).unwrap();

        let err = roots
            .existing(&base.join("allowed/escape/secret"))
            .unwrap_err();

        assert!(
            matches!(&err, PathError::Outside { resolved: Some(r), .. } if *r == base.join("outside/secret")),
            "{err:?}"
        );
        assert!(err.hint().unwrap().contains("symlink"));
    }

    #[test]
    fn dot_dot_is_refused_even_when_it_lands_inside() {
        let (_tmp, base, roots) = layout();

        let err = roots
            .existing(&base.join("allowed/sub/../file"))
            .unwrap_err();

        assert!(matches!(err, PathError::DotDot { .. }), "{err:?}");
    }

    #[test]
    fn a_relative_path_is_refused() {
        let (_tmp, _base, roots) = layout();

        let err = roots.existing(Path::new("allowed/file")).unwrap_err();

        assert!(matches!(err, PathError::Relative { .. }), "{err:?}");
    }

    #[test]
    fn without_roots_every_path_is_refused_with_a_hint() {
        let roots = AllowedRoots::default();

        let err = roots.existing(Path::new("/")).unwrap_err();

        assert!(matches!(err, PathError::NoRoots), "{err:?}");
        assert!(err.hint().unwrap().contains("--allow-path"));
    }

    #[test]
    fn a_new_file_needs_its_directory_inside() {
        let (_tmp, base, roots) = layout();

        let ok = roots.new_file(&base.join("allowed/sub/new.patch")).unwrap();
        let err = roots.new_file(&base.join("outside/new.patch")).unwrap_err();

        assert_eq!(ok, base.join("allowed/sub/new.patch"));
        assert!(matches!(err, PathError::Outside { .. }), "{err:?}");
    }

    #[test]
    fn a_new_file_that_is_a_symlink_out_is_refused() {
        let (_tmp, base, roots) = layout();
        symlink(base.join("outside/secret"), base.join("allowed/trap")).unwrap();

        let err = roots.new_file(&base.join("allowed/trap")).unwrap_err();

        assert!(matches!(err, PathError::Outside { .. }), "{err:?}");
    }

    #[test]
    fn a_missing_allow_path_fails_at_startup() {
        let err = AllowedRoots::new(&[PathBuf::from("/nonexistent/banger-mcp")]).unwrap_err();

        assert!(matches!(err, RootError::Unusable { .. }), "{err:?}");
    }
}
