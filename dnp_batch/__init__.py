"""dnp_batch: image datasets with Diffusion-Negative Prompting and ANSWER guidance on diffusers.

The library's names are imported on first use (PEP 562), so `import dnp_batch.runs` (what the
verify, report and pairs tools read) does not pull in torch and diffusers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .api import METHODS, AnswerConfig, GenerateResult, generate, sample_id
    from .models import load_pipeline

_HOMES = {"METHODS": "api", "AnswerConfig": "api", "GenerateResult": "api", "generate": "api", "sample_id": "api",
          "load_pipeline": "models"}

__all__ = ["METHODS", "AnswerConfig", "GenerateResult", "generate", "load_pipeline", "sample_id"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _HOMES:
        value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
