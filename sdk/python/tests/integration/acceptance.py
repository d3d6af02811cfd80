"""The SDK as a new user would use it, run from a fresh venv by test_acceptance.py:
a throwaway run, then a VM that gets a file, a repository and a change, and hands the
change back as a patch."""

import pathlib
import subprocess
import tempfile

import banger

client = banger.Client()

r = client.run(shell="echo out; echo err >&2; exit 3")
assert (r.exit_code, r.stdout, r.stderr) == (3, "out\n", "err\n"), r

with tempfile.TemporaryDirectory() as tmp:
    repo = pathlib.Path(tmp)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "README.md").write_text("hello\n")
    subprocess.run(["git", "-C", str(repo), "add", "README.md"], check=True)

    with client.create() as vm:
        vm.write_file("/root/note.txt", "a note\n")
        assert vm.read_file("/root/note.txt") == b"a note\n"

        ws = vm.prepare_workspace(repo)
        assert ws.files == 1, ws

        changed = vm.exec(["sh", "-c", "echo 'changed in the guest' >> README.md"], cwd="/root/repo")
        assert changed.exit_code == 0, changed

        patch = vm.export_patch()
        assert "+changed in the guest" in patch, patch

assert client.list_vms() == [], client.list_vms()
print("acceptance: ok")
