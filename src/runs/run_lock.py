"""One run at a time in a run directory: ``RUN/run.lock``, created atomically, holding the run's pid.

Two runs started into the same directory (the same ``hydra.run.dir``, or ``ckpt_path=last`` resumed
twice) would write the same checkpoints, logs and ``metrics.json`` over each other. The first takes
the lock; the second is refused before it writes anything, with the pid of the run that holds it.

- The lock file is created with ``O_CREAT | O_EXCL``: of two runs starting at the same moment, one gets it.
- It holds the pid and the host name. A lock whose process is gone (a run killed with ``kill -9``, a
  machine that rebooted) is stale: the next run on that host takes it over with a warning, so a
  killed run resumes in place as before. A lock of another host cannot be checked from here; it
  is refused, and the message says to delete the file if no run is using the directory.
- It is removed when the run ends, whether it finished, failed or was stopped (SIGTERM, Ctrl-C).
- Only the first process of a run locks: the processes that DDP starts for the other devices (ranks
  1, 2, ...) run in the same directory on purpose.

``python -m src.train`` takes the lock in a Hydra callback (:class:`LockRunDir`), before Hydra writes
``.hydra/`` and ``train.log`` into the directory; :func:`src.runs.training.train` takes it too when it is
called directly (tests, the bench), and finds it already held by its own process otherwise.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from src.core.user_errors import USER_ERROR_STATUS

log = logging.getLogger(__name__)

LOCK_NAME = "run.lock"


class RunDirectoryInUse(FileExistsError):
    """Another run holds the lock of this run directory."""


def _holder(lock: Path) -> dict[str, Any] | None:
    """The lock's ``{"pid", "host"}``, or None when it cannot be read (being written, or damaged)."""
    try:
        holder = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


def _create(lock: Path) -> bool:
    """Create ``lock`` holding this process's pid; False when it exists already."""
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
    return True


def _refusal(run_dir: Path, lock: Path, holder: dict[str, Any] | None) -> RunDirectoryInUse:
    who = (f"process {holder['pid']} on {holder.get('host')}" if holder is not None
           else "a run that is starting (its lock file is still being written)")
    return RunDirectoryInUse(
        f"{run_dir} is in use by another run ({who}, see {lock}): two runs in one directory would overwrite each "
        "other's checkpoints. Choose another hydra.run.dir, or wait for that run to end; if no run is using the "
        f"directory any more (its machine went down), delete {lock} and start again")


def acquire_run_lock(run_dir: Path, warn: Callable[[str], None] = log.warning) -> bool:
    """Take ``run_dir``'s lock; True if this call took it, False if this process already holds it.

    Raises :class:`RunDirectoryInUse` when a running process holds it (see the module); a stale lock taken
    over is told to ``warn``."""
    run_dir = Path(run_dir)
    lock = run_dir / LOCK_NAME
    run_dir.mkdir(parents=True, exist_ok=True)
    if _create(lock):
        return True
    holder = _holder(lock)
    if holder is not None and holder["pid"] == os.getpid() and holder.get("host") == socket.gethostname():
        return False
    if holder is None or holder.get("host") != socket.gethostname() or _is_running(holder["pid"]):
        raise _refusal(run_dir, lock, holder)
    # Stale. Renamed aside first: of two runs taking it over at once, only one moves it; the other then
    # finds the new lock and is refused.
    aside = lock.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        holder = None
    else:
        if _holder(aside) == holder:
            aside.unlink()
            warn(f"{run_dir}: took over the lock of process {holder['pid']}, which is no longer running "
                 "(a run that was killed)")
        else:  # a lock taken between our read and the rename: put it back
            os.rename(aside, lock)
            holder = _holder(lock)
    if _create(lock):
        return True
    raise _refusal(run_dir, lock, _holder(lock))


def release_run_lock(run_dir: Path) -> None:
    """Remove ``run_dir``'s lock if this process holds it."""
    lock = Path(run_dir) / LOCK_NAME
    holder = _holder(lock)
    if holder is not None and holder["pid"] == os.getpid():
        lock.unlink(missing_ok=True)


@contextmanager
def run_directory_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block (the first process of a run only; see the module)."""
    if rank_zero_only.rank != 0:
        yield
        return
    acquired = acquire_run_lock(run_dir)
    try:
        yield
    finally:
        if acquired:
            release_run_lock(run_dir)


class LockRunDir(Callback):
    """``hydra.callbacks`` of ``conf/train.yaml``: the lock is taken before Hydra creates the run directory's
    files, and released when the job ends (or the process exits: SIGTERM ends a run with ``SystemExit``).

    Hydra turns a callback's exception into a warning and runs the job anyway, so a refusal is printed
    here and ends the process with the status of a user's error, as :mod:`src.core.user_errors` does."""

    def __init__(self) -> None:
        self.run_dir: Path | None = None
        self.warnings: list[str] = []  # logged once Hydra has set up logging (train.log)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if rank_zero_only.rank != 0:
            return
        run_dir = Path(str(config.hydra.run.dir)).absolute()
        try:
            acquired = acquire_run_lock(run_dir, warn=self.warnings.append)
        except RunDirectoryInUse as error:
            sys.stderr.write(f"{type(error).__name__}: {error}\n")
            raise SystemExit(USER_ERROR_STATUS) from None
        if acquired:
            self.run_dir = run_dir
            atexit.register(release_run_lock, run_dir)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        for warning in self.warnings:
            log.warning("%s", warning)
        self.warnings.clear()

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.run_dir is not None:
            release_run_lock(self.run_dir)  # before RemoveRunDirOfRefusedStart looks at what the directory holds
