"""Supervised child processes: never orphaned, never hit by the terminal's Ctrl-C.

Two guarantees every child of the dev stack and of the tests needs:

* It runs in its own session, so a Ctrl-C in the terminal reaches only the
  launcher, which then stops its children in order (Postgres last, say).
* It gets SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``), so a
  launcher that is ``kill -9``'d or crashes leaves no Postgres or nats-server behind.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

import psutil

logger = logging.getLogger(__name__)

# Every child starts through this script, which sets the parent-death signal (and
# switches user) before it execs the command; see its docstring for why.
_TRAMPOLINE = Path(__file__).with_name("trampoline.py")


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
    if user is not None and os.geteuid() != 0:
        raise PermissionError(f"running a child as {user!r} needs root")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    trampoline = [sys.executable, "-S", str(_TRAMPOLINE), str(os.getpid()), user or "", "--"]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [*trampoline, *(os.fspath(a) for a in argv)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
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


class SupervisedServer:
    """Base of a server we run as a supervised child: ``start``/``stop``/``kill`` by the
    subclass, the child in ``_proc``; a context manager, and the live child's pid."""

    _proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL, as a crash would; the data stays for the next ``start``."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None
