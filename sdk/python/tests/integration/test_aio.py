"""The asyncio flavour once against the real daemon: run(), then one VM."""

from __future__ import annotations

import asyncio
from pathlib import Path

import banger
from banger.aio import AsyncClient


def test_async_run_and_vm(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("uploaded\n")

    async def main() -> tuple[banger.RunResult, list[banger.ExecEvent], bytes, list[str]]:
        async with AsyncClient() as client:
            ran = await client.run(["sh", "-c", "echo async; exit 5"])
            async with client.create(exec_only=True) as vm:
                await vm.upload(tmp_path / "in.txt", "/root/in")
                async with vm.exec_stream(["cat", "/root/in/in.txt"]) as stream:
                    events = [event async for event in stream]
                await vm.download("/root/in", tmp_path / "out")
                read = await vm.read_file("/root/in/in.txt")
            left = [v.name for v in await client.list_vms()]
        return ran, events, read, left

    ran, events, read, left = asyncio.run(main())

    assert (ran.exit_code, ran.stdout) == (5, "async\n")
    assert events == [banger.Stdout(b"uploaded\n"), banger.Exit(0, False)]
    assert read == b"uploaded\n"
    assert (tmp_path / "out/in.txt").read_text() == "uploaded\n"
    assert left == []
