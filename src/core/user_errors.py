"""One line for a user's mistake, a traceback for a bug: the wrapper of every entry point's Hydra main.

Hydra's ``hydra.main`` catches whatever the task raises and prints a traceback (its own frames
stripped) and exits 1, unless ``HYDRA_FULL_ERROR=1``, when it raises the exception again
(``hydra._internal.utils.run_and_report``). :func:`one_line_user_errors` wraps the function that
``hydra.main`` returns, runs it with ``HYDRA_FULL_ERROR=1`` so that the exception reaches it, and
tells the two kinds apart:

- a user's error: a missing optional extra (:class:`~src.core.extras.MissingExtraError`, one line naming
  the install command), a ``ValueError`` (``ConfigError`` among them) or an ``OSError``
  (``FileNotFoundError``, a full disk) raised by the project's own code in ``src/`` (the innermost
  frame of its traceback), or a Hydra error about the command line (a missing config group option,
  an override it cannot parse), or the SLURM launcher started on a machine without SLURM. It becomes
  its own message on stderr and exit status 2, as a bad command line gets from ``argparse``;
- anything else (a bug, or an error raised inside a library) goes on as a traceback, exit status 1.

Hydra still sees the exception first, so its job callbacks run as before (``RemoveRunDirOfRefusedStart``).
``HYDRA_FULL_ERROR=1`` set by the user keeps every traceback, user errors included.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.errors import CompactHydraException, InstantiationException

from src.core.extras import EXTRA_MODULES, MissingExtraError, install_command, is_installed

USER_ERROR_STATUS = 2
PROJECT_CODE = Path(__file__).resolve().parents[1]  # src/

# Config groups that a Hydra plugin of an optional extra provides, and that extra.
PLUGIN_EXTRAS = {"hydra/sweeper/optuna": "optuna", "hydra/launcher/submitit": "slurm"}

Main = TypeVar("Main", bound=Callable[..., Any])


def raised_in_project(error: BaseException) -> bool:
    """Whether the innermost frame of ``error``'s traceback is a file of ``src/``."""
    innermost = error.__traceback__
    if innermost is None:
        return False
    while innermost.tb_next is not None:
        innermost = innermost.tb_next
    return Path(innermost.tb_frame.f_code.co_filename).resolve().is_relative_to(PROJECT_CODE)


def raised_in_module(error: BaseException, package: str) -> bool:
    """Whether a frame of ``error``'s traceback is in ``package`` (a top-level module name)."""
    frame = error.__traceback__
    while frame is not None:
        if frame.tb_frame.f_globals.get("__name__", "").split(".")[0] == package:
            return True
        frame = frame.tb_next
    return False


def off_cluster_message(error: BaseException) -> str | None:
    """One line for the SLURM launcher started where SLURM is not (no ``srun`` on PATH): submitit stops
    while it sets the launcher up, before anything is submitted; that is where the command is run, not a bug."""
    if isinstance(error, RuntimeError) and raised_in_module(error, "submitit") and shutil.which("srun") is None:
        return (f"hydra/launcher=submitit_slurm submits to a SLURM cluster, and this machine has no srun ({error}): "
                "run the command on the cluster's login node, or try the sweep here with hydra/launcher=submitit_local")
    return None


def missing_plugin_hint(message: str) -> str:
    """The install command, when ``message`` (Hydra's) is about a config group that an extra's plugin
    provides and that plugin is not installed; else an empty string."""
    for group, extra in PLUGIN_EXTRAS.items():
        if f"'{group}" in message and not all(map(is_installed, EXTRA_MODULES[extra])):
            return f"it comes with the {extra} extra, not installed: {install_command(extra)}"
    return ""


def user_error_message(error: Exception) -> str | None:
    """What to print for ``error`` when it is a user's error (see the module), else None."""
    if isinstance(error, MissingExtraError):
        return str(error)
    off_cluster = off_cluster_message(error)
    if off_cluster is not None:
        return off_cluster
    if isinstance(error, InstantiationException) and isinstance(error.__cause__, Exception):
        # Hydra wraps what a constructor raised in three lines ("Error in call to target ...", the error's
        # repr, full_key); a user's error in there is printed as itself, in its one line
        cause = user_error_message(error.__cause__)
        if cause is not None:
            return cause
    if isinstance(error, CompactHydraException):
        message = str(error)
        hint = missing_plugin_hint(message)
        if hint:
            # one line, as for every missing extra: Hydra's "Could not find 'hydra/sweeper/optuna'" and the
            # extra, without its list of the options and the config search path
            missing = re.search(r"Could not find '[^']+'", message)
            return f"{missing.group(0) if missing else message.splitlines()[0]}: {hint}"
        return message
    if isinstance(error, (ValueError, OSError)) and raised_in_project(error):
        return f"{type(error).__name__}: {error}"
    return None


def one_line_user_errors(main: Main) -> Main:
    """Wrap an entry point's ``@hydra.main`` function (put this decorator above ``@hydra.main``)."""

    @functools.wraps(main)
    def run(*args: Any, **kwargs: Any) -> Any:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            return main(*args, **kwargs)
        os.environ["HYDRA_FULL_ERROR"] = "1"
        try:
            return main(*args, **kwargs)
        except Exception as error:
            message = user_error_message(error)
            if message is None:
                raise
            sys.stderr.write(message + "\n")
            raise SystemExit(USER_ERROR_STATUS) from None
        finally:
            os.environ.pop("HYDRA_FULL_ERROR", None)

    return run  # type: ignore[return-value]
