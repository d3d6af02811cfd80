//! The guest side of a copy: GNU tar run through the agent's exec stream. Paths are
//! passed as separate arguments of `sh -c SCRIPT`, never spliced into the script.

use tokio::io::{AsyncRead, AsyncWrite};

use super::error::CopyError;
use super::spec::GuestPath;
use crate::workspace::exec::{self, GuestFailed, Runner, VmAs};

/// What is at a guest path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A directory (or a symlink to one).
    Dir,
    /// Anything else that exists (a file, a device), or a symlink to nothing.
    Other,
    /// Nothing, but its directory exists.
    Absent,
    /// Neither it nor its directory exists.
    NoParent,
}

/// A guest path looked up: what is there, and (when it exists) the path with every
/// symlink resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub found: Found,
    pub resolved: Option<GuestPath>,
}

/// Prints the kind on the first line, then the resolved path of what exists.
const PROBE: &str = r#"p=$1
if [ -d "$p" ]; then echo dir
elif [ -e "$p" ]; then echo other
elif [ -L "$p" ]; then echo dangling; exit 0
elif [ -d "$(dirname -- "$p")" ]; then echo absent; exit 0
else echo noparent; exit 0; fi
exec readlink -f -- "$p""#;

/// Reads from stdin into the directory `$1`. Ownership goes to root; modes are kept.
const EXTRACT: &str = r#"command -v tar >/dev/null 2>&1 || exit 127
exec tar -x -f - --no-same-owner -C "$1""#;

/// Writes `$2` (a name in the directory `$1`) to stdout. `./` keeps a name that
/// starts with `-` from reading as an option.
const CREATE: &str = r#"command -v tar >/dev/null 2>&1 || exit 127
exec tar -c -f - -C "$1" "./$2""#;

/// Says what is at `path` in the guest.
pub async fn probe(vm: &VmAs<'_>, path: &GuestPath) -> Result<Probe, CopyError> {
    let mut out = Vec::new();
    let spec = exec::spec(&["sh", "-c", PROBE, "probe", path.as_str()]);
    // Two short lines; a guest printing more gets no answer out of it.
    let mut capped = exec::Capped::new(&mut out, 64 * 1024);
    let ran = vm.run(spec, tokio::io::empty(), &mut capped).await;
    let over = capped.over();
    let done = ran?;
    parse_probe(&out)
        .filter(|_| done.code == 0 && !over)
        .ok_or_else(|| {
            GuestFailed::new(vm.name(), "looking up the path", done.code, &done.stderr).into()
        })
}

fn parse_probe(out: &[u8]) -> Option<Probe> {
    let text = std::str::from_utf8(out).ok()?;
    let (kind, rest) = text.split_once('\n')?;
    let resolved = rest.strip_suffix('\n').filter(|r| r.starts_with('/'));
    let (found, resolved) = match (kind, resolved) {
        ("dir", Some(r)) => (Found::Dir, Some(GuestPath::resolved(r))),
        ("other", Some(r)) => (Found::Other, Some(GuestPath::resolved(r))),
        // A symlink to nothing: replaced like a file, never read from.
        ("dangling", None) => (Found::Other, None),
        ("absent", None) => (Found::Absent, None),
        ("noparent", None) => (Found::NoParent, None),
        _ => return None,
    };
    Some(Probe { found, resolved })
}

/// Extracts the tar read from `archive` into the guest directory `dir`.
pub async fn extract<R>(vm: &VmAs<'_>, dir: &str, archive: R) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
{
    let spec = exec::spec(&["sh", "-c", EXTRACT, "extract", dir]);
    let done = vm.run(spec, archive, &mut tokio::io::sink()).await?;
    check(vm, "tar -x", done)
}

/// Streams `name` in the guest directory `dir` as a tar into `out`.
pub async fn create<W>(vm: &VmAs<'_>, dir: &str, name: &str, out: &mut W) -> Result<(), CopyError>
where
    W: AsyncWrite + Unpin,
{
    let spec = exec::spec(&["sh", "-c", CREATE, "create", dir, name]);
    let done = vm.run(spec, tokio::io::empty(), out).await?;
    check(vm, "tar -c", done)
}

fn check(vm: &VmAs<'_>, step: &'static str, done: exec::Captured) -> Result<(), CopyError> {
    match done.code {
        127 => Err(CopyError::NoTar {
            vm: vm.name().to_string(),
        }),
        _ => Ok(done.success(vm.name(), step)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_answer_gives_the_kind_and_the_resolved_path() {
        assert_eq!(
            parse_probe(b"other\n/usr/lib/os-release \xc3\xbc x\n"),
            Some(Probe {
                found: Found::Other,
                resolved: Some(GuestPath::resolved("/usr/lib/os-release ü x")),
            })
        );
        assert_eq!(
            parse_probe(b"dangling\n").map(|p| p.found),
            Some(Found::Other)
        );
        assert_eq!(parse_probe(b"dir\n"), None, "an existing path must resolve");
        assert_eq!(parse_probe(b"what\n"), None);
    }
}
