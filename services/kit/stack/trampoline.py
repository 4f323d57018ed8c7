"""Become a supervised child, then exec the real command.

Usage: python -S trampoline.py PARENT_PID USER -- COMMAND [ARG...]   (USER may be "")

``process.spawn`` starts every child through this script instead of a
``preexec_fn``: Python code between fork() and exec() is unsafe in a parent
that runs threads (gRPC's pollers abort the forked child now and then), and
without a preexec_fn or a uid switch subprocess uses vfork(), which runs no
fork handlers at all. Only the standard library is used, so ``-S`` works.
"""

import ctypes
import os
import pwd
import shutil
import signal
import sys

_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    parent_pid, user, separator, *command = argv
    if separator != "--" or not command:
        sys.exit("usage: trampoline.py PARENT_PID USER -- COMMAND [ARG...]")
    # Resolved while still ourselves: after a switch to another user the interpreter's
    # own files (e.g. under /root) may be unreadable, so nothing may import lazily then.
    executable = shutil.which(command[0]) or command[0]
    if user:
        entry = pwd.getpwnam(user)
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    # After the uid switch: the kernel clears the parent-death signal when credentials change.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        sys.exit(f"prctl(PR_SET_PDEATHSIG) failed: errno {ctypes.get_errno()}")
    # The parent may have died before prctl: we were re-parented and no signal will come.
    if os.getppid() != int(parent_pid):
        sys.exit("parent died before the child started")
    os.execv(executable, command)


if __name__ == "__main__":
    main(sys.argv[1:])
