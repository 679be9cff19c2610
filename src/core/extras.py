"""The optional extras of pyproject.toml: which modules each brings, and the one line a command gives without them.

A command that needs an extra checks for it before any heavy work (no checkpoint loaded, no image
read, nothing written) and raises :class:`MissingExtraError`, whose message is one line naming the
extra and the exact install command; :mod:`src.core.user_errors` prints it and exits with status 2.
A config key that selects an extra (``logger=wandb``, ``model.backbone.name=timm/...``) is a
:class:`~src.core.problems.Problem` instead (:func:`extra_problems`), so that it is listed with the
config's other problems. The check finds a module without importing it (``importlib.util.find_spec``):
onnx or litserve take seconds to import.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from src.core.problems import Problem

# Each extra (pyproject.toml's optional-dependencies) and the top-level modules the project imports
# from it; a Hydra plugin is named by its module under hydra_plugins.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "export": ("onnx", "onnxscript", "onnxruntime"),
    "serve": ("litserve", "fastapi", "starlette", "multipart"),
    "timm": ("timm",),
    "wandb": ("wandb",),
    "mlflow": ("mlflow",),
    "litdata": ("litdata",),
    "optuna": ("hydra_plugins.hydra_optuna_sweeper",),
    "slurm": ("hydra_plugins.hydra_submitit_launcher",),
    "audit": ("cleanlab",),
    "heif": ("pillow_heif",),
}


class MissingExtraError(ModuleNotFoundError):
    """A command needs an optional extra that is not installed; the message is the one line to show."""


def install_command(extra: str) -> str:
    """The command that installs ``extra`` into the project's environment."""
    return f'pip install -e ".[{extra}]"'


def is_installed(module: str) -> bool:
    """Whether ``module`` can be imported (found, not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or hidden (None in sys.modules)
        return False


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that are not installed (none: the extra is there)."""
    return [module for module in EXTRA_MODULES[extra] if not is_installed(module)]


def missing_extra_message(extra: str, what: str) -> str:
    """``what needs the <extra> extra (<modules> not installed): pip install -e ".[<extra>]"``, or "" when installed."""
    missing = missing_modules(extra)
    if not missing:
        return ""
    return f"{what} needs the {extra} extra ({', '.join(missing)} not installed): {install_command(extra)}"


def require_extra(extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` naming ``extra`` and its install command when a module of it is missing;
    ``what`` is the command or setting that needs it, as the user wrote it."""
    message = missing_extra_message(extra, what)
    if message:
        raise MissingExtraError(message)


def extra_problems(extra: str, key: str, value: Any) -> list[Problem]:
    """The config setting ``key=value`` needs ``extra``: a problem naming the install command when it is missing."""
    missing = missing_modules(extra)
    if not missing:
        return []
    return [Problem(key, value, f"the {extra} extra ({', '.join(missing)} not installed)", install_command(extra))]
