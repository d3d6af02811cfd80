"""prepare_workspace ships the working tree's tracked files, as `git ls-files` lists
them, in one tar; run() ships a repo, execs, and deletes its VM however exec ends."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import httpx
import pytest
from fakes import VM, FakeDaemon, error, ndjson, stream

import banger

WORKSPACE = "/api/v1/vms/box/workspace"


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with tracked files (one executable, one symlink, one in a subdir),
    then an uncommitted edit, an untracked file, and a tracked file deleted."""
    r = tmp_path / "repo"
    (r / "src").mkdir(parents=True)
    git(r, "init", "-q")
    (r / "README.md").write_text("readme\n")
    (r / "src/build.sh").write_text("#!/bin/sh\n")
    (r / "src/build.sh").chmod(0o755)
    (r / "gone.txt").write_text("soon deleted\n")
    (r / "docs").symlink_to("README.md")
    git(r, "add", "-A")
    git(r, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    (r / "README.md").write_text("readme, edited\n")
    (r / "untracked.txt").write_text("not shipped\n")
    (r / "gone.txt").unlink()
    return r


def members(request: httpx.Request) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(request.content)) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_prepare_workspace_tars_the_tracked_files_of_the_working_tree(fake: FakeDaemon, repo: Path) -> None:
    fake.on("POST", WORKSPACE, httpx.Response(200, json={"path": "/root/repo", "files": 3}))
    vm = banger.Vm(fake.client(), banger.VmInfo.from_json(VM))

    ws = vm.prepare_workspace(repo)

    request = fake.requests[-1]
    sent = members(request)
    with tarfile.open(fileobj=io.BytesIO(request.content)) as tar:
        readme = tar.extractfile("README.md").read()  # type: ignore[union-attr]
    assert sorted(sent) == ["README.md", "docs", "src/build.sh"]
    assert readme == b"readme, edited\n"
    assert sent["src/build.sh"].mode & 0o777 == 0o755
    assert (sent["docs"].issym(), sent["docs"].linkname) == (True, "README.md")
    assert {m.uname for m in sent.values()} == {"root"}
    # No path: the daemon picks the default for the VM's user.
    assert dict(request.url.params) == {}
    assert ws == banger.Workspace("/root/repo", 3)


def test_prepare_workspace_takes_another_destination(fake: FakeDaemon, repo: Path) -> None:
    fake.on("POST", WORKSPACE, httpx.Response(200, json={"path": "/srv/app", "files": 3}))
    vm = banger.Vm(fake.client(), banger.VmInfo.from_json(VM))

    vm.prepare_workspace(str(repo), dest="/srv/app")

    assert dict(fake.requests[-1].url.params) == {"path": "/srv/app"}


def test_a_directory_that_is_not_a_repository_is_invalid(fake: FakeDaemon, tmp_path: Path) -> None:
    vm = banger.Vm(fake.client(), banger.VmInfo.from_json(VM))

    with pytest.raises(banger.InvalidArgument, match="is not a git repository"):
        vm.prepare_workspace(tmp_path)

    assert fake.requests == []


def test_run_creates_a_throwaway_vm_ships_the_repo_execs_and_deletes_it(fake: FakeDaemon, repo: Path) -> None:
    fake.on("POST", "/api/v1/vms", httpx.Response(201, json=VM))
    fake.on("POST", WORKSPACE, httpx.Response(200, json={"path": "/root/repo", "files": 3}))
    fake.on(
        "POST",
        "/api/v1/vms/box/exec",
        stream(
            ndjson(
                {"type": "started", "id": "1"},
                {"type": "stdout", "data": "b3V0Cg=="},
                {"type": "stderr", "data": "ZXJyCg=="},
                {"type": "exit", "code": 3, "timed_out": False},
            )
        ),
    )
    fake.on("DELETE", "/api/v1/vms/box", httpx.Response(204))

    result = fake.client().run(shell="echo out; echo err >&2; exit 3", repo=repo, image="default")

    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert fake.calls() == [
        ("POST", "/api/v1/vms"),
        ("POST", WORKSPACE),
        ("POST", "/api/v1/vms/box/exec"),
        ("DELETE", "/api/v1/vms/box"),
    ]
    assert json.loads(fake.requests[0].content) == {
        "image": "default",
        "warm": True,
        "exec_only": True,
        "ephemeral": True,
    }
    assert json.loads(fake.requests[2].content)["cwd"] == "/root/repo"


def test_run_deletes_its_vm_when_exec_fails(fake: FakeDaemon) -> None:
    fake.on("POST", "/api/v1/vms", httpx.Response(201, json=VM))
    fake.on("POST", "/api/v1/vms/box/exec", error(502, "agent_failed", "no such file: nope"))
    fake.on("DELETE", "/api/v1/vms/box", httpx.Response(204))

    with pytest.raises(banger.AgentFailed, match="no such file"):
        fake.client().run(["nope"])

    assert fake.calls()[-1] == ("DELETE", "/api/v1/vms/box")


def test_run_deletes_its_vm_when_the_stream_breaks(fake: FakeDaemon) -> None:
    fake.on("POST", "/api/v1/vms", httpx.Response(201, json=VM))
    fake.on(
        "POST",
        "/api/v1/vms/box/exec",
        stream(
            ndjson(
                {"type": "started", "id": "1"},
                {"type": "error", "code": "vmm_failed", "message": "the VM stopped"},
            )
        ),
    )
    fake.on("DELETE", "/api/v1/vms/box", httpx.Response(204))

    with pytest.raises(banger.VmmFailed):
        fake.client().run(["sleep", "100"])

    assert fake.calls()[-1] == ("DELETE", "/api/v1/vms/box")


def test_run_deletes_its_vm_when_shipping_the_repo_fails(fake: FakeDaemon, tmp_path: Path) -> None:
    fake.on("POST", "/api/v1/vms", httpx.Response(201, json=VM))
    fake.on("DELETE", "/api/v1/vms/box", httpx.Response(204))

    with pytest.raises(banger.InvalidArgument):
        fake.client().run(["make"], repo=tmp_path)

    assert fake.calls() == [("POST", "/api/v1/vms"), ("DELETE", "/api/v1/vms/box")]


def test_run_checks_its_command_before_creating_a_vm(fake: FakeDaemon) -> None:
    with pytest.raises(ValueError):
        fake.client().run()

    assert fake.requests == []
