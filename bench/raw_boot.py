#!/usr/bin/env python3
"""The floor: boot a VM with QEMU alone, no banger, and time it.

Takes the exact command line of a QEMU that banger launched (read from
/proc/PID/cmdline), points its per-VM paths at a scratch directory, gives it a fresh
copy of a never-booted upper disk, and times from spawn until the guest agent's hello
(HELLO_SYNC, then one length-prefixed frame) arrives on the virtio-serial socket.

Usage: raw_boot.py CMDLINE_FILE OLD_VM_DIR OLD_RUNTIME_DIR UPPER_TEMPLATE RUNS
Prints one line per run: the milliseconds from spawn to hello.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HELLO_SYNC = b"\xffBANGER\x01"
TIMEOUT_S = 300


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise RuntimeError("agent channel closed before the hello")
        buf += chunk
    return buf


def wait_hello(path):
    """Connects to QEMU's chardev socket and returns once a whole hello has arrived."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT_S)
    sock.connect(path)
    window = b""
    while not window.endswith(HELLO_SYNC):
        window = (window + read_exact(sock, 1))[-len(HELLO_SYNC):]
    length = int.from_bytes(read_exact(sock, 4), "big")
    read_exact(sock, length)
    sock.close()


def rewrite(args, old_vm_dir, old_rt_dir, vm_dir, rt_dir):
    # The runtime dir may live under the state dir or the other way round: replace
    # the longer prefix first.
    pairs = sorted([(old_vm_dir, vm_dir), (old_rt_dir, rt_dir)], key=lambda p: -len(p[0]))
    out = []
    for a in args:
        for old, new in pairs:
            a = a.replace(old, new)
        out.append(a)
    return out


def one_run(args, old_vm_dir, old_rt_dir, template):
    scratch = tempfile.mkdtemp(prefix="banger-raw.")
    vm_dir = os.path.join(scratch, "vm")
    rt_dir = os.path.join(scratch, "run")
    os.makedirs(vm_dir)
    os.makedirs(rt_dir)
    # A fresh, sparse upper disk, as banger gives every new VM (not timed: banger's
    # own disk creation is part of its overhead, reported separately).
    subprocess.run(
        ["cp", "--sparse=always", template, os.path.join(vm_dir, "upper.ext4")], check=True
    )
    argv = rewrite(args, old_vm_dir, old_rt_dir, vm_dir, rt_dir)
    pid = None
    try:
        t0 = time.monotonic()
        # -daemonize: the launcher exits once QEMU is initialised and its sockets bound.
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
        wait_hello(os.path.join(rt_dir, "agent.sock"))
        ms = (time.monotonic() - t0) * 1000
        return ms
    finally:
        try:
            with open(os.path.join(rt_dir, "vmm.pid")) as f:
                pid = int(f.read().strip())
            os.kill(pid, signal.SIGKILL)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.05)
        except (OSError, ValueError):
            pass
        shutil.rmtree(scratch, ignore_errors=True)


def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    cmdline_file, old_vm_dir, old_rt_dir, template, runs = sys.argv[1:]
    with open(cmdline_file, "rb") as f:
        args = [a.decode() for a in f.read().split(b"\0") if a]
    if "-daemonize" not in args:
        sys.exit("raw_boot: expected a -daemonize QEMU command line")
    for _ in range(int(runs)):
        print(f"{one_run(args, old_vm_dir, old_rt_dir, template):.0f}", flush=True)


if __name__ == "__main__":
    main()
