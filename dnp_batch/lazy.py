"""Names a package imports from its modules on first use (PEP 562), so importing the package, or
one light module of it, does not pull in torch and diffusers."""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_names(package: str, namespace: dict, homes: dict[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` for `package`: `name` comes from its module `homes[name]` (relative to
    the package), imported on first use and then kept in `namespace` (the package's globals)."""

    def __getattr__(name: str):
        if name in homes:
            value = getattr(importlib.import_module(f".{homes[name]}", package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
