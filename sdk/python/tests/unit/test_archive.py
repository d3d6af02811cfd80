"""Upload tars what it is given; download extracts only what stays inside the
destination, and refuses a hostile archive before writing anything."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Optional

import httpx
import pytest
from fakes import VM, FakeDaemon

import banger
from banger._archive import extract, tar_path

ARCHIVE = "/api/v1/vms/box/archive"


def entry(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "", mode: int = 0o644
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = mode
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info


def tar_of(*entries: tarfile.TarInfo, data: Optional[list[bytes]] = None) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i, info in enumerate(entries):
            payload = (data or [])[i] if data and i < len(data) else b"x" * info.size
            tar.addfile(info, io.BytesIO(payload) if info.isreg() else None)
    buf.seek(0)
    return buf


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    "hostile",
    [
        entry("/etc/cron.d/evil", data=b"x"),
        entry("../escape", data=b"x"),
        entry("ok/../../escape", data=b"x"),
        entry("link", tarfile.SYMTYPE, link="/etc"),
        entry("link", tarfile.SYMTYPE, link="../../etc"),
        entry("sub/link", tarfile.SYMTYPE, link="../.."),
        entry("hard", tarfile.LNKTYPE, link="/etc/passwd"),
        entry("hard", tarfile.LNKTYPE, link="../outside"),
        entry("dev", tarfile.CHRTYPE),
        entry("disk", tarfile.BLKTYPE),
        entry("pipe", tarfile.FIFOTYPE),
    ],
    ids=lambda e: f"{e.name}->{e.linkname}" if e.linkname else e.name,
)
def test_a_hostile_entry_refuses_the_whole_archive(hostile: tarfile.TarInfo, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    archive = tar_of(entry("first.txt", data=b"1"), hostile)

    with pytest.raises(banger.UnsafeArchive):
        extract(archive, str(dest))

    assert tree(dest) == []
    assert tree(tmp_path) == ["dest"]


def test_a_hard_link_must_name_an_earlier_file_of_the_archive(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("host file")
    archive = tar_of(entry("hard", tarfile.LNKTYPE, link="secret"))

    with pytest.raises(banger.UnsafeArchive, match="not an earlier file"):
        extract(archive, str(tmp_path))


def test_symlinks_that_escape_only_together_are_refused(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    # `a` resolves to dest/b/.. = dest while b is absent; once b -> . exists, a is dest/..
    archive = tar_of(entry("a", tarfile.SYMTYPE, link="b/.."), entry("b", tarfile.SYMTYPE, link="."))

    with pytest.raises(banger.UnsafeArchive, match="together they resolve outside"):
        extract(archive, str(dest))

    assert tree(dest) == []


def test_a_symlink_already_in_the_destination_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "out").symlink_to(outside)
    archive = tar_of(entry("out/planted", data=b"x"))

    with pytest.raises(banger.UnsafeArchive, match="resolves outside"):
        extract(archive, str(dest))

    assert tree(outside) == []


def test_a_file_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("keep me")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "f").symlink_to(target)
    archive = tar_of(entry("f", data=b"new"), data=[b"new"])

    extract(archive, str(dest))

    assert (dest / "f").read_text() == "new"
    assert not (dest / "f").is_symlink()
    assert target.read_text() == "keep me"


def test_a_safe_archive_is_extracted_with_its_modes_and_inner_links(tmp_path: Path) -> None:
    archive = tar_of(
        entry("./", tarfile.DIRTYPE, mode=0o755),
        entry("./bin/", tarfile.DIRTYPE, mode=0o755),
        entry("./bin/run", data=b"#!/bin/sh\n", mode=0o4755),
        entry("./notes.txt", data=b"hello", mode=0o640),
        entry("./latest", tarfile.SYMTYPE, link="bin/run"),
        entry("./bin/up", tarfile.SYMTYPE, link="../notes.txt"),
        entry("./copy", tarfile.LNKTYPE, link="./notes.txt"),
        data=[b"", b"", b"#!/bin/sh\n", b"hello"],
    )

    count = extract(archive, str(tmp_path / "out"))

    out = tmp_path / "out"
    assert count == 6
    assert tree(out) == ["bin", "bin/run", "bin/up", "copy", "latest", "notes.txt"]
    assert stat.S_IMODE((out / "bin/run").stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "notes.txt").stat().st_mode) == 0o640
    assert os.readlink(out / "latest") == "bin/run"
    assert (out / "bin/up").read_text() == "hello"
    assert (out / "copy").read_text() == "hello"


def test_download_fetches_the_archive_and_extracts_it(fake: FakeDaemon, tmp_path: Path) -> None:
    fake.on(
        "GET", ARCHIVE, httpx.Response(200, content=tar_of(entry("a.txt", data=b"A"), data=[b"A"]).getvalue())
    )
    vm = banger.Vm(fake.client(), banger.VmInfo.from_json(VM))

    count = vm.download("/root/out", tmp_path / "got")

    assert count == 1
    assert (tmp_path / "got/a.txt").read_text() == "A"
    assert dict(fake.requests[-1].url.params) == {"path": "/root/out"}


def test_download_of_a_hostile_archive_raises_unsafe_archive(fake: FakeDaemon, tmp_path: Path) -> None:
    fake.on("GET", ARCHIVE, httpx.Response(200, content=tar_of(entry("../../x", data=b"x")).getvalue()))
    vm = banger.Vm(fake.client(), banger.VmInfo.from_json(VM))

    with pytest.raises(banger.UnsafeArchive):
        vm.download("/root/out", tmp_path / "got")


def test_upload_of_a_directory_sends_its_contents(fake: FakeDaemon, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub/a.txt").write_text("A")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "sub").chmod(0o755)
    (src / "sub/a.txt").chmod(0o644)
    (src / "run.sh").chmod(0o755)
    fake.on("PUT", ARCHIVE, httpx.Response(204))
    vm = banger.Vm(fake.client(), banger.VmInfo.from_json(VM))

    vm.upload(src, "/root/dest")

    request = fake.requests[-1]
    with tarfile.open(fileobj=io.BytesIO(request.content)) as tar:
        members = {m.name: (m.mode & 0o777, m.uid, m.uname) for m in tar.getmembers()}
    assert members == {
        "run.sh": (0o755, 0, "root"),
        "sub": (0o755, 0, "root"),
        "sub/a.txt": (0o644, 0, "root"),
    }
    assert dict(request.url.params) == {"path": "/root/dest"}
    assert request.headers["content-length"] == str(len(request.content))
    assert "transfer-encoding" not in request.headers


def test_upload_of_a_file_sends_it_under_its_name(tmp_path: Path) -> None:
    (tmp_path / "data.bin").write_bytes(b"\x00\x01")

    body = tar_path(str(tmp_path / "data.bin"))
    with tarfile.open(fileobj=body.file) as tar:
        names = tar.getnames()

    assert names == ["data.bin"]
