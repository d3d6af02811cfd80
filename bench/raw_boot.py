#!/usr/bin/env python3
"""The floor: boot a VM with QEMU alone, no banger, and time it.

Takes the exact command line of a QEMU that banger launched (read from
/proc/PID/cmdline). That QEMU opens no path of banger's: it finds its sockets, disks,
logs, kernel, initrd and boot secret at fixed descriptor numbers (see
crates/bangerd/src/vmm/qemu/handoff.rs). This script hands the same descriptors over,
made in a scratch directory from IMAGE_DIR's files and a fresh copy of a never-booted
upper disk, starts QEMU as the VMM user as banger does, and times from spawn until the
guest agent's hello (HELLO_SYNC, then one length-prefixed frame) arrives on the
virtio-serial socket. The VM must have no network (no tap to hand over).

Usage: raw_boot.py CMDLINE_FILE IMAGE_DIR UPPER_TEMPLATE RUNS
Prints one line per run: the milliseconds from spawn to hello.
"""

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time

VMM_USER = "banger-vmm"
# handoff.rs's descriptor numbers.
AGENT_SOCKET, QMP_SOCKET, ROOT_DISK, UPPER_DISK, SERIAL_LOG, BOOT_SECRET, KERNEL, INITRD = range(3, 11)
# The guest's memory, a memfd QEMU sizes itself (bangerd::vmm::qemu::memory).
MEMORY = 12
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


def listener(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(1)
    return sock


def one_run(args, image_dir, template):
    scratch = tempfile.mkdtemp(prefix="banger-raw.")
    # A fresh, sparse upper disk, as banger gives every new VM (not timed: banger's
    # own disk creation is part of its overhead, reported separately).
    upper = os.path.join(scratch, "upper.ext4")
    subprocess.run(["cp", "--sparse=always", template, upper], check=True)
    agent_path = os.path.join(scratch, "agent.sock")
    secret = os.memfd_create("banger-boot")
    os.write(secret, b"banger.token=raw-boot")
    opened = {
        AGENT_SOCKET: listener(agent_path).detach(),
        QMP_SOCKET: listener(os.path.join(scratch, "qmp.sock")).detach(),
        ROOT_DISK: os.open(os.path.join(image_dir, "rootfs.ext4"), os.O_RDONLY),
        UPPER_DISK: os.open(upper, os.O_RDWR),
        SERIAL_LOG: os.open(os.path.join(scratch, "serial.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600),
        BOOT_SECRET: secret,
        KERNEL: os.open(os.path.join(image_dir, "bzImage"), os.O_RDONLY),
        INITRD: os.open(os.path.join(image_dir, "initrd.img"), os.O_RDONLY),
        MEMORY: os.memfd_create("banger-guest"),
    }
    # Out of the way of the target numbers first, then onto them.
    staged = {n: os.dup(fd) for n, fd in opened.items()}
    for fd in opened.values():
        os.close(fd)

    def place():
        for n, fd in staged.items():
            os.dup2(fd, n)

    user = pwd.getpwnam(VMM_USER)
    proc = None
    try:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            # Python makes its own descriptors non-inheritable; `place`'s dup2s are.
            args, stdin=subprocess.DEVNULL, preexec_fn=place, close_fds=False,
            user=user.pw_uid, group=user.pw_gid, extra_groups=[], cwd="/",
        )
        wait_hello(agent_path)
        return (time.monotonic() - t0) * 1000
    finally:
        for fd in staged.values():
            os.close(fd)
        if proc is not None:
            proc.kill()
            proc.wait()
        shutil.rmtree(scratch, ignore_errors=True)


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    cmdline_file, image_dir, template, runs = sys.argv[1:]
    with open(cmdline_file, "rb") as f:
        args = [a.decode() for a in f.read().split(b"\0") if a]
    if "-netdev" in args:
        sys.exit("raw_boot: expected the command line of a VM without a network")
    for _ in range(int(runs)):
        print(f"{one_run(args, image_dir, template):.0f}", flush=True)


if __name__ == "__main__":
    main()
