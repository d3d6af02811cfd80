//! The guest side of a copy: GNU tar run through the agent's exec stream. Paths are
//! passed as separate arguments of `sh -c SCRIPT`, never spliced into the script.

use tokio::io::{AsyncRead, AsyncWrite};

use super::error::{CopyError, Stderr};
use super::spec::GuestPath;
use crate::workspace::exec::{self, Runner, Vm};

/// What is at a guest path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A directory (or a symlink to one).
    Dir,
    /// Anything else that exists (a file, a symlink, a device).
    Other,
    /// Nothing, but its directory exists.
    Absent,
    /// Neither it nor its directory exists.
    NoParent,
}

const PROBE: &str = r#"p=$1
if [ -d "$p" ]; then echo dir
elif [ -e "$p" ] || [ -L "$p" ]; then echo other
elif [ -d "$(dirname -- "$p")" ]; then echo absent
else echo noparent; fi"#;

/// Reads from stdin into the directory `$1`. Ownership goes to root; modes are kept.
const EXTRACT: &str = r#"command -v tar >/dev/null 2>&1 || exit 127
exec tar -x -f - --no-same-owner -C "$1""#;

/// Writes `$2` (a name in the directory `$1`) to stdout. `./` keeps a name that
/// starts with `-` from reading as an option.
const CREATE: &str = r#"command -v tar >/dev/null 2>&1 || exit 127
exec tar -c -f - -C "$1" "./$2""#;

/// Says what is at `path` in the guest.
pub async fn probe(vm: &Vm<'_>, path: &GuestPath) -> Result<Found, CopyError> {
    let mut out = Vec::new();
    let spec = exec::spec(&["sh", "-c", PROBE, "probe", path.as_str()]);
    let done = vm.run(spec, tokio::io::empty(), &mut out).await?;
    let found = match (done.code, out.as_slice()) {
        (0, b"dir\n") => Found::Dir,
        (0, b"other\n") => Found::Other,
        (0, b"absent\n") => Found::Absent,
        (0, b"noparent\n") => Found::NoParent,
        (code, _) => {
            return Err(CopyError::Guest {
                vm: vm.name().to_string(),
                step: "looking up the path",
                code,
                stderr: Stderr::from_bytes(&done.stderr),
            })
        }
    };
    Ok(found)
}

/// Extracts the tar read from `archive` into the guest directory `dir`.
pub async fn extract<R>(vm: &Vm<'_>, dir: &str, archive: R) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
{
    let spec = exec::spec(&["sh", "-c", EXTRACT, "extract", dir]);
    let done = vm.run(spec, archive, &mut tokio::io::sink()).await?;
    check(vm, "tar -x", done)
}

/// Streams `name` in the guest directory `dir` as a tar into `out`.
pub async fn create<W>(vm: &Vm<'_>, dir: &str, name: &str, out: &mut W) -> Result<(), CopyError>
where
    W: AsyncWrite + Unpin,
{
    let spec = exec::spec(&["sh", "-c", CREATE, "create", dir, name]);
    let done = vm.run(spec, tokio::io::empty(), out).await?;
    check(vm, "tar -c", done)
}

fn check(vm: &Vm<'_>, step: &'static str, done: exec::Captured) -> Result<(), CopyError> {
    match done.code {
        0 => Ok(()),
        127 => Err(CopyError::NoTar {
            vm: vm.name().to_string(),
        }),
        code => Err(CopyError::Guest {
            vm: vm.name().to_string(),
            step,
            code,
            stderr: Stderr::from_bytes(&done.stderr),
        }),
    }
}
