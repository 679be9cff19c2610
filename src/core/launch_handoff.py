"""What rank 0 has found out before Lightning starts the other DDP processes, handed to them.

With ``trainer=ddp`` Lightning's script launcher runs the same command again for every other
process (``LOCAL_RANK=1..``) when rank 0 calls ``trainer.fit``. Each of those would scan the data
folder again (every file opened, or stat-ed with a cache) and run the lr finder again, one after
another, before they can build the model: the model's class count comes from the scan, and the
process group that ``strategy.broadcast`` needs only exists once every process has reached ``fit``.

So rank 0 writes what it found (the scanned index with the bad files, the learning rate lr_find
chose) to a private temporary file and names it in :data:`HANDOFF_ENV`, which the launched
processes inherit: they read it instead of opening the files, and build the same split, class
list and schedule. JSON, not pickle: reading it runs no code. The file is removed when rank 0's
run ends.

Processes started by an external launcher (torchrun, SLURM's srun) all start at once; they do
not get the handoff and each scans (with the scan cache in a shared ``paths.cache_dir``, without
opening the files again). See docs/data-at-scale.md.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L

log = logging.getLogger(__name__)

HANDOFF_ENV = "IFC_RANK0_HANDOFF"


def received() -> dict[str, Any] | None:
    """What rank 0 handed to this launched process, or None (rank 0 itself, or no handoff)."""
    path = os.environ.get(HANDOFF_ENV)
    if not path:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise RuntimeError(f"{HANDOFF_ENV}={path!r}: rank 0's handoff cannot be read ({error}). It is written by "
                           "the DDP run that launched this process and removed when that run ends: start the run "
                           f"again, without {HANDOFF_ENV} in the environment") from error


def launches_processes(trainer: L.Trainer) -> bool:
    """Whether ``trainer.fit`` will start the other processes in new interpreters, which scan unless handed
    rank 0's findings.

    Lightning's public API only: the strategy's ``launcher``, whose ``is_interactive_compatible`` is
    False for the launchers that start new interpreters (the script launcher of ``strategy=ddp``, which
    runs this command again, and a ``spawn`` start method) and True for ``fork`` and XLA; and the
    cluster environment's ``creates_processes_externally`` (torchrun, SLURM's srun: the processes are
    all started already, and none is launched). Lightning keeps its launcher classes private
    (``_SubprocessScriptLauncher``), so they are not named here.
    """
    launcher = getattr(trainer.strategy, "launcher", None)
    environment = getattr(trainer.strategy, "cluster_environment", None)
    return (trainer.world_size > 1 and launcher is not None and not launcher.is_interactive_compatible
            and environment is not None and not environment.creates_processes_externally)


@contextmanager
def handed_over(trainer: L.Trainer, payload: Callable[[], dict[str, Any]]) -> Iterator[None]:
    """In rank 0, around ``trainer.fit``: the processes it launches receive ``payload()`` (only called
    when there are such processes: a 1.28M-image index takes seconds to write)."""
    if not launches_processes(trainer) or HANDOFF_ENV in os.environ:
        yield
        return
    fd, name = tempfile.mkstemp(prefix="ifc-rank0-", suffix=".json")  # mode 0600: this user's processes only
    try:
        with os.fdopen(fd, "w") as f:
            handed = payload()
            json.dump(handed, f, separators=(",", ":"))
        os.environ[HANDOFF_ENV] = name
        log.info("rank 0 hands its scan%s to the %d other process(es) (%s)",
                 " and lr_find's choice" if "first_stage_lr" in handed else "", trainer.world_size - 1, name)
        yield
    finally:
        os.environ.pop(HANDOFF_ENV, None)
        Path(name).unlink(missing_ok=True)
