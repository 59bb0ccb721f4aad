"""One training run at a time in an output folder: a lock file naming the process that owns the folder.

Two runs writing into one folder interleave their epochs in ``metrics.jsonl`` and overwrite each other's
checkpoints, and both report success. The owner creates ``train.lock`` with ``O_CREAT | O_EXCL`` (of two runs
starting together exactly one succeeds) and writes its PID, host, start time and command into it; it removes
the file on every way out of the run.

A lock can outlive its owner (SIGKILL, a power cut). Such a lock is stale and the next run replaces it,
saying so, when the owner was on this host and its PID is gone, or now belongs to another process (Linux
tells by the process's start time). A lock written on another host (a shared filesystem) cannot be checked
from here: it is refused, with the path to delete once that run is known to have ended.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

__all__ = ["LOCK_NAME", "OutputInUse", "RunLock", "ensure_free"]

LOCK_NAME = "train.lock"
# how long a lock file may stay empty or half-written: its owner writes it right after creating it
_WRITE_GRACE_S = 2.0


class OutputInUse(ValueError):
    """The output folder is locked by another run that is alive, or whose state cannot be checked from here."""


@dataclasses.dataclass(frozen=True)
class _Owner:
    pid: int
    host: str
    started: float  # time.time() when the lock was taken
    command: str
    token: str  # tells two locks of one process apart (two Trainers in one process)
    process_start: Optional[str] = None  # the kernel's start time of pid (Linux), which a reused PID changes

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        this = " (this process)" if self.pid == os.getpid() and self.host == socket.gethostname() else ""
        return f"process {self.pid}{this} on {self.host}, started {when}: {self.command}"


def _process_start(pid: int) -> Optional[str]:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot); None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # fields[0] is field 3 (the state); a zombie has exited and only waits for its parent to collect it
    return None if fields[0] == "Z" else fields[19]


def _alive(owner: _Owner) -> Optional[bool]:
    """Whether the owner still runs: None when it cannot be told from here (another host)."""
    if owner.host != socket.gethostname():
        return None
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    if owner.process_start is not None and _process_start(owner.pid) != owner.process_start:
        return False  # exited (a zombie), or its PID now belongs to another process
    return True


def _read(path: Path) -> tuple[Optional[str], Optional[_Owner]]:
    """(text, owner) of a lock file; (None, None) once it is gone, (text, None) when it is not a lock of ours."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, None
    try:
        owner = _Owner(**json.loads(text))
    except (ValueError, TypeError):
        return text, None
    if not isinstance(owner.pid, int) or owner.pid <= 0:
        return text, None
    return text, owner


def ensure_free(folder: Path) -> None:
    """Raise :class:`OutputInUse` when a run that is alive, or cannot be checked, holds ``folder``'s lock (a
    stale lock is left for :meth:`RunLock.acquire` to replace)."""
    path = folder / LOCK_NAME
    _, owner = _read(path)
    if owner is not None and (alive := _alive(owner)) is not False:
        raise _in_use(folder, path, owner, alive)


def _in_use(folder: Path, path: Path, owner: _Owner, alive: Optional[bool]) -> OutputInUse:
    if alive is None:
        return OutputInUse(
            f"{folder} is locked by {owner.describe()}; this host ({socket.gethostname()}) cannot tell whether "
            f"that run still goes on: once it has ended, delete {path}")
    return OutputInUse(f"{folder} is in use by {owner.describe()}; wait for that run to end or train into another "
                       "folder")


class RunLock:
    """The lock of one output folder, held by this process from :meth:`acquire` until :meth:`release`."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self._text = path, text

    @classmethod
    def acquire(cls, folder: Path, log: Callable[[str], None]) -> "RunLock":
        """Take ``folder``'s lock (the folder must exist); replaces a stale one with a line to ``log``, raises
        :class:`OutputInUse` naming the owner of a live one."""
        path = folder / LOCK_NAME
        me = _Owner(pid=os.getpid(), host=socket.gethostname(), started=time.time(), command=" ".join(sys.argv),
                    token=uuid.uuid4().hex, process_start=_process_start(os.getpid()))
        text = json.dumps(dataclasses.asdict(me))
        deadline = time.monotonic() + _WRITE_GRACE_S
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                seen, owner = _read(path)
                if seen is None:
                    continue  # released between our two calls
                if owner is None:
                    if time.monotonic() < deadline:  # its owner may not have written it yet
                        time.sleep(0.05)
                        continue
                    raise OutputInUse(
                        f"{path} exists but names no run ({seen[:80]!r}); delete it if no training run is "
                        f"using {folder}") from None
                if (alive := _alive(owner)) is not False:
                    raise _in_use(folder, path, owner, alive) from None
                if _remove_if_unchanged(path, seen):
                    log(f"replaced the stale lock {path} of {owner.describe()} (that process has ended)")
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            return cls(path, text)

    def release(self) -> None:
        """Remove the lock file if it is still ours."""
        _remove_if_unchanged(self.path, self._text)


def _remove_if_unchanged(path: Path, expected: str) -> bool:
    """Remove ``path`` if it still holds ``expected``: renamed aside first and checked there, so that a lock
    another run took since ``expected`` was read is put back rather than deleted."""
    aside = path.with_name(f"{path.name}.{uuid.uuid4().hex}.old")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    if aside.read_text() != expected:
        os.rename(aside, path)
        return False
    aside.unlink()
    return True
