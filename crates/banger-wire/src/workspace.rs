//! The guest side of a workspace: the shell scripts the CLI (`banger workspace`) and the
//! daemon's public API run in a guest to unpack a working tree and to take its changes
//! back out as a patch. Each runs as `sh -c SCRIPT NAME ARGS...`: paths travel as
//! arguments, never spliced into the script. Their exit codes below say which
//! precondition failed.

/// Where a workspace lands in the guest unless told otherwise, for root.
pub const DEFAULT_DEST: &str = "/root/repo";

/// Where a workspace lands for the user the guest's commands run as: [`DEFAULT_DEST`]
/// for root, `repo` in another user's home (`/home/NAME/repo`), which root's is not
/// readable for.
pub fn default_dest(user: Option<&GuestUser>) -> String {
    match user {
        Some(user) if !user.is_root() => format!("{}/repo", user.home()),
        _ => DEFAULT_DEST.into(),
    }
}

use crate::user::GuestUser;

/// `$1` the destination, `$2` the branch HEAD should name (may be empty): refuses a
/// destination that is not empty, then `git init`s it.
pub const INIT: &str = r#"set -eu
command -v git >/dev/null 2>&1 || exit 101
command -v tar >/dev/null 2>&1 || exit 102
d=$1
if [ -e "$d" ] && [ -n "$(ls -A "$d" 2>/dev/null)" ]; then exit 103; fi
mkdir -p "$d"
git init -q "$d"
if [ -n "$2" ]; then git -C "$d" symbolic-ref HEAD "$2"; fi
"#;

/// `$1` the destination: unpacks the tar on stdin into it, owned by the guest user.
pub const FILES: &str = r#"exec tar -x --no-same-owner -C "$1""#;

/// `$1` the workspace, `$2` `head` (changes since `refs/banger/base`) or `shipped`
/// (since `refs/banger/shipped`): writes `git diff --binary` of everything in the
/// working tree, staged in a throwaway index, against that base. The guest's own index
/// and refs are left alone.
pub const EXPORT: &str = r#"set -eu
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

/// `$1` the workspace, unpacked by [`FILES`] from a tar with no git objects (the public
/// API's): commits every file as the baseline, points `refs/banger/base` and
/// `refs/banger/shipped` at it, so [`EXPORT`] diffs against it, and prints how many
/// files it holds.
pub const BASELINE: &str = r#"set -eu
cd "$1"
git add -A -f
git -c user.name=banger -c user.email=banger@localhost -c commit.gpgsign=false \
  commit -q --allow-empty --no-verify -m "banger: workspace baseline"
git update-ref refs/banger/base HEAD
git update-ref refs/banger/shipped 'HEAD^{tree}'
git ls-files -z | tr -cd '\000' | wc -c
"#;

/// [`INIT`]: the guest has no `git`.
pub const NO_GIT: i32 = 101;
/// [`INIT`]: the guest has no `tar`.
pub const NO_TAR: i32 = 102;
/// [`INIT`]: the destination exists and is not empty.
pub const NOT_EMPTY: i32 = 103;
/// [`EXPORT`]: there is no workspace at the path.
pub const NO_WORKSPACE: i32 = 104;
