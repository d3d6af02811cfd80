//! Bringing a workspace's changes out of the guest as a git patch.
//!
//! The guest stages everything (`git add -A`, untracked non-ignored files included)
//! into a throwaway index kept inside `.git`, then diffs it against a base with
//! `--binary --full-index`: modified, added, deleted, renamed and binary files and mode
//! changes all survive. The guest's own index and refs are left alone.

use tokio::io::AsyncWrite;

use super::error::WorkspaceError;
use super::exec::{self, Runner};
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

const EXPORT: &str = r#"set -eu
cd "$1" 2>/dev/null || exit 104
git rev-parse -q --verify refs/banger/shipped >/dev/null || exit 104
gd=$(git rev-parse --absolute-git-dir)
idx="$gd/banger-export.index"
trap 'rm -f "$idx"' EXIT
rm -f "$idx"
if [ -f "$gd/index" ]; then cp "$gd/index" "$idx"; fi
export GIT_INDEX_FILE="$idx"
git add -A
case $2 in
  head) base=$(git rev-parse -q --verify 'refs/banger/base^{tree}' || git hash-object -t tree /dev/null) ;;
  *) base=$(git rev-parse --verify refs/banger/shipped) ;;
esac
git -c core.quotepath=false -c diff.noprefix=false -c diff.mnemonicPrefix=false \
  diff --cached --binary --full-index --no-color --no-ext-diff --no-textconv \
  --no-relative -M --src-prefix=a/ --dst-prefix=b/ "$base" --
"#;

/// Writes the patch of the workspace at `dest` in `guest` to `out`.
pub async fn export<W: AsyncWrite + Unpin>(
    guest: &impl Runner,
    dest: &str,
    base: Base,
    out: &mut W,
) -> Result<(), WorkspaceError> {
    let vm = guest.name();
    let spec = exec::spec(&["sh", "-c", EXPORT, "banger-ws-export", dest, base.arg()]);
    let captured = guest
        .run(spec, tokio::io::empty(), out)
        .await
        .map_err(|e| capture_error(vm, e))?;
    if captured.code == 104 {
        return Err(WorkspaceError::NoWorkspace {
            vm: vm.into(),
            dest: dest.into(),
        });
    }
    check(vm, "making the patch", captured)
}
