"""Supervised child processes: never orphaned, never hit by the terminal's Ctrl-C.

Two guarantees every child of the dev stack and of the tests needs:

* It runs in its own session, so a Ctrl-C in the terminal reaches only the
  launcher, which then stops its children in order (Postgres last, say).
* It gets SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``), so a
  launcher that is ``kill -9``'d or crashes leaves no Postgres or nats-server behind.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import pwd
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
# Loaded in the parent: the child, after fork(), only calls the function.
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent(parent_pid: int) -> None:
    """preexec_fn: runs in the child after fork and after the uid/gid switch.

    subprocess applies ``user=``/``group=`` (setregid/setreuid) *before* it calls
    preexec_fn, which matters: the kernel clears the parent-death signal whenever
    the effective uid or gid changes, so it must be set after the switch.
    """
    if _libc is None:
        return
    if _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(127)
    # The parent may have died between fork() and prctl(): we would have been
    # re-parented already and the signal will never come.
    if os.getppid() != parent_pid:
        os._exit(127)


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as a supervised child; stdout and stderr are appended to ``log_path``.

    ``user`` (a login name) runs the child under that account, with its primary
    group and no supplementary groups; it needs root. Caveat: the parent-death
    signal fires when the *thread* that spawned the child exits, so spawn
    long-lived children from the main thread (not from ``asyncio.to_thread``).
    """
    credentials: dict[str, object] = {}
    if user is not None:
        entry = pwd.getpwnam(user)
        # subprocess's user= alone keeps gid 0 and root's groups; drop them too.
        credentials = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    parent_pid = os.getpid()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [os.fspath(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=functools.partial(_die_with_parent, parent_pid),
            **credentials,  # type: ignore[arg-type]
        )
    logger.info("started %s (pid %d), log %s", os.fspath(argv[0]), proc.pid, log_path)
    return proc


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
    """Send ``sig``, wait up to ``timeout`` s, then SIGKILL; return the exit code.

    Descendants still alive once the child is gone (e.g. Postgres backends after
    the postmaster was SIGKILLed; they run in their own sessions) are SIGKILLed too.
    """
    descendants: list[psutil.Process] = []
    # Only while it is unreaped can its pid not belong to some unrelated process.
    if proc.poll() is None:
        try:
            descendants = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning(
                "pid %d ignored signal %d for %.0f s; killing it", proc.pid, sig, timeout
            )
            proc.kill()
            proc.wait()
    _, alive = psutil.wait_procs(descendants, timeout=min(timeout, 2.0))
    for orphan in alive:
        logger.warning("killing leftover descendant pid %d of pid %d", orphan.pid, proc.pid)
        try:
            orphan.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5.0)
    return proc.returncode


def log_tail(path: Path, size: int = 4000) -> str:
    """The last ``size`` bytes of a child's log, for error messages."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - size))
            return f.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
