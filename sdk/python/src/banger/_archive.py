"""Tar archives on the host side: built from a local file, directory or git repository
into a temporary file (then streamed as a request body), and extracted with every
entry checked to stay inside the destination."""

from __future__ import annotations

import os
import posixpath
import shutil
import subprocess
import tarfile
import tempfile
from typing import IO, Optional

from ._protocol import Body
from .errors import HostFailed, InvalidArgument, UnsafeArchive


def _anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Host owners stay on the host: the guest gets root-owned files."""
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _finish(f: IO[bytes]) -> Body:
    length = f.tell()
    f.seek(0)
    return Body(f, length)


def tar_path(local_path: str) -> Body:
    """A tar of a file (as its base name) or of a directory's contents."""
    f = tempfile.TemporaryFile()
    with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if os.path.isdir(local_path):
            for entry in sorted(os.listdir(local_path)):
                tar.add(os.path.join(local_path, entry), arcname=entry, filter=_anonymous)
        else:
            tar.add(local_path, arcname=os.path.basename(os.path.abspath(local_path)), filter=_anonymous)
    return _finish(f)


def git_tracked(repo: str) -> list[str]:
    """The paths `git ls-files -z` lists: the repository's tracked files."""
    try:
        out = subprocess.run(
            ["git", "-C", repo, "ls-files", "-z"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
    except FileNotFoundError as e:
        raise HostFailed(
            "git is not installed", hint="prepare_workspace lists the repository's files with git"
        ) from e
    if out.returncode != 0:
        raise InvalidArgument(
            f"{repo} is not a git repository: {out.stderr.decode('utf-8', 'replace').strip()}",
            hint="prepare_workspace ships the files `git ls-files` lists",
        )
    return [os.fsdecode(p) for p in out.stdout.split(b"\0") if p]


def tar_workspace(repo: str) -> tuple[Body, int]:
    """A tar of the working tree's tracked files (with uncommitted edits, without
    untracked files), and how many it holds. Tracked files deleted from the working
    tree and submodules are left out."""
    f = tempfile.TemporaryFile()
    count = 0
    with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in git_tracked(repo):
            full = os.path.join(repo, rel)
            if not (os.path.islink(full) or os.path.isfile(full)):
                continue
            tar.add(full, arcname=rel, recursive=False, filter=_anonymous)
            count += 1
    return _finish(f), count


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _member_name(name: str) -> Optional[str]:
    """The entry's path relative to the destination, None for the destination itself,
    or an UnsafeArchive error for one that would leave it."""
    if name.startswith("/"):
        raise UnsafeArchive(f"refused the archive entry {name!r}: an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"refused the archive entry {name!r}: it climbs out with '..'")
    return "/".join(parts) or None


def _check_members(members: list[tarfile.TarInfo]) -> list[tuple[str, tarfile.TarInfo]]:
    """Every entry's relative path, after refusing the whole archive if any entry is
    unsafe: an absolute or climbing path, a device or FIFO, a link pointing outside,
    a hard link to anything but an earlier file of the archive."""
    files: set[str] = set()
    checked = []
    for m in members:
        rel = _member_name(m.name)
        if rel is None:
            continue
        if m.issym():
            if m.linkname.startswith("/"):
                raise UnsafeArchive(
                    f"refused the symlink {rel!r}: it points to the absolute path {m.linkname!r}"
                )
            target = posixpath.normpath(posixpath.join(posixpath.dirname(rel), m.linkname))
            if target == ".." or target.startswith("../"):
                raise UnsafeArchive(f"refused the symlink {rel!r}: it points outside ({m.linkname!r})")
        elif m.islnk():
            source = _member_name(m.linkname)
            if source not in files:
                raise UnsafeArchive(
                    f"refused the hard link {rel!r}: {m.linkname!r} is not an earlier file of the archive"
                )
        elif m.isreg():
            files.add(rel)
        elif not m.isdir():
            raise UnsafeArchive(f"refused the archive entry {rel!r}: a device or FIFO")
        checked.append((rel, m))
    return checked


def extract(f: IO[bytes], dest: str) -> int:
    """Extracts the tar in `f` into `dest` (created if needed) and returns how many
    entries it held. Nothing is written unless every entry passes `_check_members`;
    each path is also checked, as it is created, to resolve inside `dest` through
    whatever is on disk (symlinks already there included), and symlinks are made last,
    then checked again. Owners are not kept; modes lose setuid, setgid and sticky bits."""
    os.makedirs(dest, exist_ok=True)
    root = os.path.realpath(dest)
    with tarfile.open(fileobj=f, mode="r:*") as tar:
        members = _check_members(tar.getmembers())
        dirs: dict[str, int] = {}
        links: list[tuple[str, str]] = []
        for rel, m in members:
            target = _place(root, rel)
            if m.isdir():
                if not os.path.isdir(target):
                    _clear(target)
                    os.mkdir(target, 0o700)
                dirs[target] = (m.mode & 0o777) | 0o700
            elif m.isreg():
                _clear(target)
                _write(tar, m, target)
            elif m.islnk():
                _clear(target)
                os.link(os.path.join(root, _member_name(m.linkname) or ""), target, follow_symlinks=False)
            else:
                links.append((rel, m.linkname))
        _symlinks(root, links)
        for path, mode in dirs.items():
            os.chmod(path, mode)
        return len(members)


def _symlinks(root: str, links: list[tuple[str, str]]) -> None:
    """Makes the archive's symlinks, each checked to resolve inside `root` when made
    and all of them again once made (a later link can redirect an earlier one); on a
    refusal none of them is left."""
    made: list[str] = []
    try:
        for rel, linkname in links:
            target = _place(root, rel)
            if not _inside(os.path.realpath(os.path.join(os.path.dirname(target), linkname)), root):
                raise UnsafeArchive(f"refused the symlink {rel!r}: {linkname!r} resolves outside {root}")
            _clear(target)
            os.symlink(linkname, target)
            made.append(target)
        escaping = [os.path.relpath(t, root) for t in made if not _inside(os.path.realpath(t), root)]
        if escaping:
            raise UnsafeArchive(f"refused the symlinks {escaping}: together they resolve outside {root}")
    except UnsafeArchive:
        for target in made:
            os.unlink(target)
        raise


def _place(root: str, rel: str) -> str:
    """Where entry `rel` goes, its parent dirs made, after checking that the parent
    resolves inside `root` through what is on disk now."""
    target = os.path.join(root, rel)
    parent = os.path.dirname(target)
    if not _inside(os.path.realpath(parent), root):
        raise UnsafeArchive(f"refused the archive entry {rel!r}: its directory resolves outside {root}")
    os.makedirs(parent, exist_ok=True)
    return target


def _clear(target: str) -> None:
    """Removes a file or symlink in the way (never what a symlink points to)."""
    if os.path.islink(target) or os.path.isfile(target):
        os.unlink(target)
    elif os.path.isdir(target):
        raise UnsafeArchive(f"refused to replace the directory {target} with a file")


def _write(tar: tarfile.TarFile, m: tarfile.TarInfo, target: str) -> None:
    src = tar.extractfile(m)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        if src is not None:
            shutil.copyfileobj(src, out)
        os.fchmod(out.fileno(), (m.mode & 0o777) | 0o600)
    os.utime(target, (m.mtime, m.mtime), follow_symlinks=False)
