#!/usr/bin/env python3
"""Drives `banger mcp` with the official MCP Python SDK against a real VM.

Run: python3 tests/mcp/test_mcp.py (or under pytest). Needs the `mcp` package, git, a
built `banger` (BANGER_BIN, else `banger` on PATH) and the BANGER_* environment of a host
that can boot VMs (scripts/smoke.sh sets it up). Skips, saying why, when any is missing.
"""

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client
except ImportError:  # pragma: no cover - reported by main()
    ClientSession = None

TOOLS = {"vm_create", "vm_list", "vm_delete", "exec", "write_file", "read_file",
         "workspace_prepare", "workspace_export", "run"}
# Booting under software emulation on a loaded host is slow.
SLOW = 900


def log(msg):
    print(f"mcp-test: {msg}", file=sys.stderr, flush=True)


def field(obj, snake, camel):
    """Reads a result field under its SDK 2.x (snake) or 1.x (camel) name."""
    return getattr(obj, snake, None) if hasattr(obj, snake) else getattr(obj, camel, None)


def text_of(result):
    return "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")


class Tools:
    def __init__(self, session):
        self.session = session

    async def call(self, name, args, timeout=SLOW):
        return await self.session.call_tool(name, args, read_timeout_seconds=timeout)

    async def ok(self, name, args, timeout=SLOW):
        result = await self.call(name, args, timeout)
        assert not field(result, "is_error", "isError"), f"{name} failed: {text_of(result)}"
        data = field(result, "structured_content", "structuredContent")
        assert data is not None, f"{name} returned no structured content"
        # The text block carries the same JSON for clients without structured content.
        assert json.loads(text_of(result)) == data
        return data

    async def refused(self, name, args, timeout=SLOW):
        result = await self.call(name, args, timeout)
        assert field(result, "is_error", "isError"), f"{name} should have failed: {text_of(result)}"
        return text_of(result)


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def make_repo(root):
    repo = root / "repo"
    (repo / "src").mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=repo)
    git("config", "user.email", "mcp@banger.test", cwd=repo)
    git("config", "user.name", "mcp", cwd=repo)
    (repo / "README.md").write_text("hello from the host\n")
    (repo / "src" / "lib.txt").write_text("one\ntwo\n")
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "base", cwd=repo)
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not for the guest\n")
    # A symlink that leads out of the allowed directory.
    os.symlink(outside, repo / "escape")
    return repo, outside


async def check_tools(session):
    listed = (await session.list_tools()).tools
    by_name = {t.name: t for t in listed}
    assert TOOLS <= set(by_name), f"missing tools: {TOOLS - set(by_name)}"
    for name in TOOLS:
        tool = by_name[name]
        schema = field(tool, "input_schema", "inputSchema")
        assert schema.get("type") == "object", f"{name}: input schema {schema}"
        assert field(tool, "output_schema", "outputSchema"), f"{name}: no output schema"
        assert tool.description and len(tool.description) > 40, f"{name}: thin description"
    exec_props = field(by_name["exec"], "input_schema", "inputSchema")["properties"]
    assert {"vm", "command", "shell", "timeout_secs"} <= set(exec_props), exec_props
    log(f"tools listed: {sorted(by_name)}")


async def check_exec(t, vm):
    r = await t.ok("exec", {"vm": vm, "command": ["sh", "-c", "exit 3"]})
    assert r["exit_code"] == 3 and r["timed_out"] is False, r

    r = await t.ok("exec", {"vm": vm, "shell": "echo out; echo err >&2"})
    assert (r["exit_code"], r["stdout"], r["stderr"]) == (0, "out\n", "err\n"), r

    r = await t.ok("exec", {"vm": vm, "command": ["printf", "[%s]", "a b", "$HOME", ""]})
    assert r["stdout"] == "[a b][$HOME][]", r

    r = await t.ok("exec", {"vm": vm, "shell": "cat; echo \"$GREETING\"", "stdin": "in\n",
                            "env": {"GREETING": "hi there"}, "cwd": "/tmp"})
    assert r["stdout"] == "in\nhi there\n", r

    r = await t.ok("exec", {"vm": vm, "shell": "head -c 1100000 /dev/zero | tr '\\0' a"})
    assert r["truncated"] is True and r["stdout_bytes"] == 1100000, {k: v for k, v in r.items() if k != "stdout"}
    assert len(r["stdout"]) == r["output_cap_bytes"] == 1 << 20

    r = await t.ok("exec", {"vm": vm, "shell": "echo started; sleep 60", "timeout_secs": 3})
    assert r["timed_out"] is True and r["exit_code"] is None, r
    assert r["stdout"] == "started\n" and "timed out" in r["note"], r
    # The agent killed the whole group: no sleep is left behind.
    r = await t.ok("exec", {"vm": vm, "shell": "pgrep -x sleep || echo none"})
    assert r["stdout"] == "none\n", r

    r = await t.ok("exec", {"vm": vm, "shell": "id -un; pwd", "user": "dev"})
    assert r["stdout"] == "dev\n/home/dev\n", r
    refusal = await t.refused("exec", {"vm": vm, "command": ["true"], "user": "Dev"})
    assert "invalid user name" in refusal and "NAME:UID" in refusal, refusal
    log("exec: exit codes, argv, stdin/env/cwd, output cap, timeout kill and user ok")


async def check_files(t, vm):
    path = "/root/dir with space/hello.txt"
    r = await t.ok("write_file", {"vm": vm, "path": path, "content": "héllo\nwörld\n", "mode": "600"})
    assert r["bytes"] == len("héllo\nwörld\n".encode()), r
    r = await t.ok("read_file", {"vm": vm, "path": path})
    assert (r["encoding"], r["content"], r["truncated"]) == ("text", "héllo\nwörld\n", False), r
    r = await t.ok("exec", {"vm": vm, "command": ["stat", "-c", "%a", path]})
    assert r["stdout"] == "600\n", r

    blob = bytes(range(256)) * 4
    await t.ok("write_file", {"vm": vm, "path": "/root/blob.bin", "encoding": "base64",
                              "content": base64.b64encode(blob).decode()})
    r = await t.ok("read_file", {"vm": vm, "path": "/root/blob.bin"})
    assert r["encoding"] == "base64" and base64.b64decode(r["content"]) == blob, r

    r = await t.ok("read_file", {"vm": vm, "path": path, "max_bytes": 3})
    assert (r["content"], r["truncated"]) == ("hé", True), r

    text = await t.refused("read_file", {"vm": vm, "path": "/root/nope"})
    assert "No such file" in text, text
    log("files: text, base64, mode, truncation and a missing file ok")


async def check_workspace(t, vm, repo, outside, root):
    text = await t.refused("workspace_prepare", {"vm": vm, "path": str(outside)})
    assert "outside the allowed directories" in text and "hint:" in text, text
    text = await t.refused("workspace_prepare", {"vm": vm, "path": str(repo / "escape")})
    assert "symlink" in text, text
    text = await t.refused("workspace_prepare", {"vm": vm, "path": f"{repo}/src/../src"})
    assert "`..`" in text, text
    log("host paths outside --allow-path refused")

    r = await t.ok("workspace_prepare", {"vm": vm, "path": str(repo / "src")})
    assert r["workdir"] == "/root/repo/src" and r["files"] == 2, r
    r = await t.ok("exec", {"vm": vm, "cwd": r["workdir"], "shell":
                            "printf 'three\\n' >>lib.txt && echo new >../new.txt && git status --porcelain"})
    assert r["exit_code"] == 0, r

    r = await t.ok("workspace_export", {"vm": vm})
    patch = r["patch"]
    assert "+three" in patch and "new.txt" in patch, patch
    clone = root / "clone"
    git("clone", "-q", str(repo), str(clone), cwd=root)
    (root / "mcp.patch").write_text(patch)
    git("apply", "--check", str(root / "mcp.patch"), cwd=clone)
    git("apply", str(root / "mcp.patch"), cwd=clone)
    assert (clone / "src" / "lib.txt").read_text() == "one\ntwo\nthree\n"
    assert (clone / "new.txt").read_text() == "new\n"

    r = await t.ok("workspace_export", {"vm": vm, "output": str(repo / "out.patch")})
    assert (repo / "out.patch").read_text() == patch and r["bytes"] == len(patch.encode()), r
    text = await t.refused("workspace_export", {"vm": vm, "output": str(outside / "x.patch")})
    assert "outside the allowed directories" in text, text
    assert not (outside / "x.patch").exists()
    text = await t.refused("workspace_export", {"vm": vm, "output": str(repo / ".git" / "hooks" / "x.patch")})
    assert "must be a .patch or .diff file outside .git" in text, text
    log("workspace: prepare, guest edit, export, git apply --check on a clean clone ok")


async def check_run(t, repo):
    before = {v["name"] for v in (await t.ok("vm_list", {}))["vms"]}
    r = await t.ok("run", {"shell": "cat README.md; pwd; exit 5", "repo": str(repo)})
    assert r["exit_code"] == 5 and r["shipped_files"] == 2, r
    assert r["stdout"] == "hello from the host\n/root/repo\n", r
    after = {v["name"] for v in (await t.ok("vm_list", {}))["vms"]}
    assert r["vm"] not in after and after <= before, (r["vm"], after)
    log("run: throwaway VM shipped, ran, exit code 5 reported, VM deleted")
    text = await t.refused("run", {"shell": "true", "export": True})
    assert "need `repo`" in text, text
    r = await t.ok("run", {"shell": "echo v2 >README.md; echo new >added.txt; exit 3",
                           "repo": str(repo), "export": True, "apply": True})
    assert r["exit_code"] == 3 and "export_error" not in r, r
    assert "+v2" in r["patch"] and "b/added.txt" in r["patch"], r["patch"]
    assert r["applied"] == {"files": 2, "three_way": False, "conflicts": []}, r
    assert (repo / "README.md").read_text() == "v2\n"
    assert (repo / "added.txt").read_text() == "new\n"
    git("checkout", "--", "README.md", cwd=repo)
    (repo / "added.txt").unlink()
    log("run: a failing command's changes came back as a patch and applied to the repo")


async def scenario(banger, root):
    repo, outside = make_repo(root)
    params = StdioServerParameters(command=banger, args=["mcp", "--allow-path", str(repo)],
                                   env=dict(os.environ))
    vm = f"mcp-test-{os.getpid()}"
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            await check_tools(session)
            t = Tools(session)
            text = await t.refused("vm_delete", {"name": "mcp-no-such-vm"})
            assert "mcp-no-such-vm" in text, text
            log(f"daemon errors come back as tool errors: {text.splitlines()[0]}")
            r = await t.ok("vm_create", {"name": vm})
            assert r["state"] == "running", r
            log(f"vm {vm} created")
            try:
                await check_exec(t, vm)
                await check_files(t, vm)
                await check_workspace(t, vm, repo, outside, root)
            finally:
                r = await t.call("vm_delete", {"name": vm})
                log(f"vm_delete {vm}: {text_of(r)}")
            names = {v["name"] for v in (await t.ok("vm_list", {}))["vms"]}
            assert vm not in names, names
            await check_run(t, repo)
            await check_scope(t, banger)


async def check_scope(t, banger):
    """Tools act only on the VMs this server created: another VM of the host is
    neither listed nor reachable."""
    other = f"mcp-other-{os.getpid()}"
    subprocess.run([banger, "vm", "create", other, "--no-start"], check=True,
                   stdout=subprocess.DEVNULL)
    try:
        names = {v["name"] for v in (await t.ok("vm_list", {}))["vms"]}
        assert other not in names, names
        for tool, args in [("exec", {"vm": other, "command": ["true"]}),
                           ("read_file", {"vm": other, "path": "/etc/hostname"}),
                           ("vm_delete", {"name": other})]:
            text = await t.refused(tool, args)
            assert "not created by this MCP server" in text and "--allow-vm" in text, text
        log("VMs this server did not create are out of reach")
    finally:
        subprocess.run([banger, "vm", "delete", other], check=True, stdout=subprocess.DEVNULL)


def main():
    if ClientSession is None:
        log("skipping: the `mcp` Python package is not installed (python3 -m pip install mcp)")
        return 0
    banger = os.environ.get("BANGER_BIN") or shutil.which("banger")
    if not banger or not shutil.which("git"):
        log("skipping: needs a banger binary (BANGER_BIN or PATH) and git")
        return 0
    with tempfile.TemporaryDirectory(prefix="banger-mcp-") as tmp:
        asyncio.run(scenario(banger, Path(tmp).resolve()))
    log("PASS")
    return 0


def test_mcp_server():
    assert main() == 0


if __name__ == "__main__":
    sys.exit(main())
