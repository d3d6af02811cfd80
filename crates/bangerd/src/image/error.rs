//! What can go wrong with images, in words a user can act on.

use std::path::PathBuf;

use banger_wire::{Diagnostic, ErrorCode};

/// What kind of registry failure an [`ImageError::Registry`] is, for its code and hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryFailure {
    /// No such repository, tag or digest.
    NotFound,
    /// The registry wants credentials, or refused the ones given.
    Denied,
    /// No answer, or not over the protocol asked (HTTP against HTTPS, a bad certificate).
    Unreachable,
    /// What it sent is not a runnable linux/amd64 image, or does not match its digest.
    BadContent,
}

/// Failure of an image operation (build, import, pull, store access).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid {what} {value:?}")]
    InvalidInput { what: &'static str, value: String },
    #[error("image {name} not found")]
    NotFound { name: String },
    #[error("image {name} already exists")]
    AlreadyExists { name: String },
    #[error("image {name} is damaged: {reason}")]
    Corrupt { name: String, reason: String },
    #[error("another build, import or delete of image {name} is in progress")]
    Busy { name: String },
    #[error("image {name} changed during the export")]
    Changed { name: String },
    #[error("building an image needs root (debootstrap and mkfs.ext4 -d keep file owners)")]
    NeedsRoot,
    #[error("{tool} not found")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },
    #[error("the image has no sudo, so --sudo cannot give the user passwordless sudo")]
    NoSudo,
    #[error("--sudo needs --user: the user to give passwordless sudo to")]
    SudoWithoutUser,
    #[error("debian archive keyring {path} not found")]
    KeyringMissing { path: PathBuf },
    #[error("{program} failed ({status}): {detail}")]
    Command {
        program: String,
        status: String,
        detail: String,
    },
    #[error("cannot {action}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("package {package} is not in the package index under {lists}")]
    PackageMissing { package: String, lists: PathBuf },
    #[error("download of {url} failed")]
    Download {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("{what} has sha256 {actual}, expected {expected}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("cannot extract an ELF vmlinux from {path}: {reason}")]
    Kernel { path: PathBuf, reason: String },
    #[error("kernel module {module} not found under {dir}")]
    ModuleMissing { module: String, dir: PathBuf },
    #[error(
        "kernel module {module} under {dir} is compressed ({file}); banger needs plain .ko files"
    )]
    ModuleCompressed {
        module: String,
        dir: PathBuf,
        file: String,
    },
    #[error("kernel modules {chain} depend on each other in a cycle")]
    ModuleCycle { chain: String },
    #[error("agent binary {path} is not an ELF executable")]
    AgentNotElf { path: PathBuf },
    #[error(
        "agent binary {path} is dynamically linked; it must run in any guest root file system"
    )]
    AgentNotStatic { path: PathBuf },
    #[error("the root filesystem needs about {needed_mib} MiB, more than the image size of {size_mib} MiB")]
    TooSmall { needed_mib: u64, size_mib: u64 },
    #[error("cannot shrink writable disk {path} from {current_mib} MiB to {requested_mib} MiB")]
    Shrink {
        path: PathBuf,
        current_mib: u64,
        requested_mib: u64,
    },
    #[error("invalid image manifest {path}")]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} still has file systems mounted under it; refusing to delete it")]
    StillMounted { path: PathBuf },
    #[error("no kernel and initramfs are cached yet")]
    NoBootFiles,
    #[error("cannot import {path}: {reason}")]
    Import { path: PathBuf, reason: String },
    #[error("archive {archive} has an entry {entry:?} that escapes the root file system")]
    UnsafeEntry { archive: PathBuf, entry: String },
    #[error("bundle {url} is invalid: {reason}")]
    Bundle { url: String, reason: String },
    #[error("{path} is not an image: {reason}")]
    NotAnImage { path: PathBuf, reason: String },
    #[error("{entry} in {archive} is {kind}, not a regular file")]
    NotRegular {
        archive: PathBuf,
        entry: String,
        kind: &'static str,
    },
    #[error("invalid image reference {reference:?}: {reason}")]
    BadReference { reference: String, reason: String },
    #[error("cannot pull {reference}: {reason}")]
    Registry {
        reference: String,
        reason: String,
        failure: RegistryFailure,
    },
    #[error("{what} is over the limit of {limit}")]
    TooLarge {
        what: String,
        limit: String,
        setting: &'static str,
    },
}

impl Diagnostic for ImageError {
    fn code(&self) -> ErrorCode {
        match self {
            ImageError::InvalidName { .. }
            | ImageError::InvalidInput { .. }
            | ImageError::TooSmall { .. }
            | ImageError::Shrink { .. }
            | ImageError::UnsafeEntry { .. }
            | ImageError::AgentNotElf { .. }
            | ImageError::AgentNotStatic { .. }
            | ImageError::SudoWithoutUser => ErrorCode::InvalidArgument,
            ImageError::NotFound { .. } => ErrorCode::NotFound,
            ImageError::BadReference { .. } => ErrorCode::InvalidArgument,
            ImageError::Registry { failure, .. } => match failure {
                RegistryFailure::NotFound => ErrorCode::NotFound,
                RegistryFailure::Denied => ErrorCode::PermissionDenied,
                RegistryFailure::Unreachable => ErrorCode::Unavailable,
                RegistryFailure::BadContent => ErrorCode::InvalidArgument,
            },
            ImageError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            ImageError::Busy { .. } | ImageError::Changed { .. } => ErrorCode::FailedPrecondition,
            ImageError::NeedsRoot => ErrorCode::PermissionDenied,
            ImageError::NoBootFiles => ErrorCode::FailedPrecondition,
            ImageError::DigestMismatch { .. }
            | ImageError::Bundle { .. }
            | ImageError::Import { .. }
            | ImageError::NotAnImage { .. }
            | ImageError::NotRegular { .. }
            | ImageError::TooLarge { .. } => ErrorCode::InvalidArgument,
            _ => ErrorCode::HostFailed,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            ImageError::NotFound { .. } => Some("build it with `banger image build`".into()),
            ImageError::Changed { .. } => Some("run the export again".into()),
            ImageError::AgentNotStatic { .. } => Some(
                "build the static agent with `make agent` (-C target-feature=+crt-static) and \
                 point BANGER_AGENT at it"
                    .into(),
            ),
            ImageError::AlreadyExists { name } => Some(format!(
                "delete it first with `banger image delete {name}`, or pick another name"
            )),
            ImageError::Corrupt { name, .. } => Some(format!(
                "delete it with `banger image delete {name}` and build or import it again"
            )),
            ImageError::NeedsRoot => Some("run bangerd as root".into()),
            ImageError::BadReference { .. } => Some(
                "write it as [registry/]repository[:tag|@sha256:digest], e.g. \
                 docker.io/library/debian:12"
                    .into(),
            ),
            ImageError::Registry { failure, .. } => Some(
                match failure {
                    RegistryFailure::NotFound => "check the repository and the tag or digest",
                    RegistryFailure::Denied => {
                        "log in with `docker login REGISTRY` (banger reads ~/.docker/config.json \
                         or REGISTRY_AUTH_FILE), or check the repository name"
                    }
                    RegistryFailure::Unreachable => {
                        "check the registry address; for a plain-HTTP or self-signed local \
                         registry add --insecure"
                    }
                    RegistryFailure::BadContent => {
                        "pull a linux/amd64 container image; nothing was kept"
                    }
                }
                .into(),
            ),
            ImageError::NoSudo => Some(
                "the sudo package did not install /usr/bin/sudo; check the build's suite and \
                 mirror, or build without --sudo"
                    .into(),
            ),
            ImageError::ToolMissing { package, .. } => {
                Some(format!("install it: apt-get install {package}"))
            }
            ImageError::KeyringMissing { .. } => Some(
                "install the debian-archive-keyring package so downloads can be verified".into(),
            ),
            ImageError::TooSmall { needed_mib, .. } => Some(format!(
                "build with a larger size, e.g. --size {}M",
                needed_mib * 2
            )),
            ImageError::Shrink { .. } => {
                Some("a writable disk can only grow; recreate the VM for a smaller disk".into())
            }
            ImageError::NoBootFiles => {
                Some("run `banger image build` once to fetch a kernel".into())
            }
            ImageError::Download { .. } => {
                Some("check the mirror URL and the host's network access".into())
            }
            ImageError::NotAnImage { .. } => Some(
                "give a root file system tarball (plain or gzip), a directory, a `docker save` \
                 archive or an OCI image layout"
                    .into(),
            ),
            ImageError::NotRegular { .. } => Some(
                "manifest.json, index.json, blobs and layers must be plain files in the \
                 archive; save the image again (`docker save`, `skopeo copy`)"
                    .into(),
            ),
            ImageError::TooLarge { setting, .. } => Some(format!(
                "raise `{setting}` in config.toml if you trust the source"
            )),
            ImageError::ModuleCompressed { .. } => {
                Some("build from a suite whose kernel ships uncompressed modules (bookworm)".into())
            }
            _ => None,
        }
    }
}

/// Attaches what was being done to an I/O error.
pub(crate) trait IoContext<T> {
    fn ctx(self, action: impl FnOnce() -> String) -> Result<T, ImageError>;
}

impl<T> IoContext<T> for Result<T, std::io::Error> {
    fn ctx(self, action: impl FnOnce() -> String) -> Result<T, ImageError> {
        self.map_err(|source| ImageError::Io {
            action: action(),
            source,
        })
    }
}
