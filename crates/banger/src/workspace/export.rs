//! Bringing a workspace's changes out of the guest as a git patch.
//!
//! The guest stages everything (`git add -A`, untracked non-ignored files included)
//! into a throwaway index kept inside `.git`, then diffs it against a base with
//! `--binary --full-index`: modified, added, deleted, renamed and binary files and mode
//! changes all survive. The guest's own index and refs are left alone.
//!
//! The guest decides how much it sends, so the patch is cut off at
//! [`MAX_PATCH_BYTES`].

use banger_wire::workspace::{EXPORT, NO_WORKSPACE};
use tokio::io::AsyncWrite;

use super::error::WorkspaceError;
use super::exec::{self, Capped, Runner};
use super::ship::{capture_error, check};

/// What the patch is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// The host's HEAD commit at ship time: the patch applies to a clean checkout.
    Head,
    /// The working tree as it was shipped: only what changed in the guest since.
    Shipped,
}

impl Base {
    fn arg(self) -> &'static str {
        match self {
            Base::Head => "head",
            Base::Shipped => "shipped",
        }
    }
}

/// The largest patch taken from a guest, in bytes.
pub const MAX_PATCH_BYTES: u64 = 256 << 20;

/// Writes the patch of the workspace at `dest` in `guest` to `out`; refuses a patch
/// larger than [`MAX_PATCH_BYTES`] (what was written by then is the caller's to drop).
pub async fn export<W: AsyncWrite + Unpin>(
    guest: &impl Runner,
    dest: &str,
    base: Base,
    out: &mut W,
) -> Result<(), WorkspaceError> {
    let vm = guest.name();
    let spec = exec::spec(&["sh", "-c", EXPORT, "banger-ws-export", dest, base.arg()]);
    let mut capped = Capped::new(out, MAX_PATCH_BYTES);
    let ran = guest.run(spec, tokio::io::empty(), &mut capped).await;
    if capped.over() {
        return Err(WorkspaceError::PatchTooLarge {
            vm: vm.into(),
            limit: MAX_PATCH_BYTES,
        });
    }
    let captured = ran.map_err(|e| capture_error(vm, e))?;
    if captured.code == NO_WORKSPACE {
        return Err(WorkspaceError::NoWorkspace {
            vm: vm.into(),
            dest: dest.into(),
        });
    }
    check(vm, "making the patch", captured)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use banger_wire::agent::ExecSpec;
    use tokio::io::{AsyncRead, AsyncReadExt};

    use super::*;
    use crate::workspace::exec::{CaptureError, Captured};

    /// A guest whose export writes `bytes` bytes and succeeds.
    struct Flood {
        bytes: u64,
    }

    impl Runner for Flood {
        fn name(&self) -> &str {
            "flood"
        }

        async fn run<R, W>(
            &self,
            _spec: ExecSpec,
            _stdin: R,
            stdout: &mut W,
        ) -> Result<Captured, CaptureError>
        where
            R: AsyncRead + Unpin,
            W: AsyncWrite + Unpin,
        {
            let mut data = tokio::io::repeat(b'+').take(self.bytes);
            tokio::io::copy(&mut data, stdout)
                .await
                .map_err(CaptureError::Output)?;
            Ok(Captured {
                code: 0,
                stderr: Vec::new(),
            })
        }
    }

    #[tokio::test]
    async fn a_patch_over_the_limit_is_refused() {
        let guest = Flood {
            bytes: MAX_PATCH_BYTES + 1,
        };

        let err = export(&guest, "/root/repo", Base::Head, &mut tokio::io::sink())
            .await
            .unwrap_err();

        assert_eq!(
            err.to_string(),
            "the patch from vm flood is larger than 256 MiB"
        );
    }
}
