"""Python started with this folder on PYTHONPATH finds none of the modules named in $HIDDEN_MODULES
(comma-separated; ``a.b`` hides ``a.b`` and its submodules): as if their packages were not installed,
without uninstalling them. tests/test_missing_extras.py runs the commands so.

Every finder of ``sys.meta_path`` is wrapped so that it finds no hidden module (``import x`` raises
``ModuleNotFoundError: No module named 'x'`` and ``importlib.util.find_spec("x")`` returns None, as for
a package that is not there), and ``pkgutil.iter_modules`` lists none (Hydra finds its plugins by listing
the ``hydra_plugins`` namespace package).
"""

import os
import pkgutil
import sys

HIDDEN = tuple(name for name in os.environ.get("HIDDEN_MODULES", "").split(",") if name)


def _hidden(name: str) -> bool:
    return any(name == hidden or name.startswith(hidden + ".") for hidden in HIDDEN)


class _Hiding:
    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if _hidden(name):
            return None
        find = getattr(self._finder, "find_spec", None)
        return None if find is None else find(name, path, target)

    def __getattr__(self, attribute):
        return getattr(self._finder, attribute)


if HIDDEN:
    sys.meta_path[:] = [_Hiding(finder) for finder in sys.meta_path]
    _iter_modules = pkgutil.iter_modules

    def _iter_unhidden(path=None, prefix=""):
        return (info for info in _iter_modules(path, prefix) if not _hidden(info.name))

    pkgutil.iter_modules = _iter_unhidden
