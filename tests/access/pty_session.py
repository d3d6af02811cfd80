#!/usr/bin/env python3
"""An interactive `banger vm exec -t` session under a real pseudo-terminal.

Run: python3 tests/access/pty_session.py BANGER vm exec -t NAME -- sh
(scripts/smoke.sh does, in the exec-tty scenario). Types into a guest shell and checks:
the guest sees a pty of the host terminal's size, a resize reaches it, Ctrl-C interrupts
the foreground command (and not the session), and the shell's exit code comes back.
"""

import fcntl
import os
import pty
import select
import struct
import sys
import termios
import time


def set_size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Session:
    def __init__(self, argv):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execvp(argv[0], argv)
        self.out = b""

    def type(self, text):
        os.write(self.fd, text)

    def expect(self, token, timeout):
        end = time.time() + timeout
        while token not in self.out:
            ready, _, _ = select.select([self.fd], [], [], max(0, end - time.time()))
            chunk = b""
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    pass
            if not chunk:
                sys.exit(f"no {token!r} within {timeout}s; the session printed {self.out!r}")
            self.out += chunk

    def exit_code(self):
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: pty_session.py BANGER vm exec -t NAME -- sh")
    s = Session(sys.argv[1:])
    set_size(s.fd, 33, 101)
    # The size must be set before banger reads it; give the child a moment to start.
    time.sleep(0.5)
    s.type(b"tty; stty size; echo typed-$((6*7))\n")
    s.expect(b"typed-42", 60)
    assert b"/dev/pts/" in s.out, "the guest command has no pty"
    assert b"33 101" in s.out, "the guest pty does not have the host terminal's size"

    set_size(s.fd, 40, 120)  # the kernel sends banger SIGWINCH
    time.sleep(0.5)
    s.type(b"stty size; sleep 60\n")
    s.expect(b"40 120", 20)
    time.sleep(1)
    s.type(b"\x03")  # Ctrl-C: must stop the sleep well before its 60 s
    s.type(b"echo back-$((1+1))\n")
    s.expect(b"back-2", 20)

    s.type(b"exit 5\n")
    code = s.exit_code()
    assert code == 5, f"the session exited {code}, not 5"
    print(s.out.decode(errors="replace"))
    print("pty session ok")


if __name__ == "__main__":
    main()
