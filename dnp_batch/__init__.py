"""dnp_batch: image datasets with Diffusion-Negative Prompting and ANSWER guidance on diffusers.

The library's names are imported on first use (PEP 562), so `import dnp_batch.runs` (what the
verify, report and pairs tools read) does not pull in torch and diffusers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_names

if TYPE_CHECKING:
    from .api import (METHODS, AnswerSettings, ApgSettings, CnpSettings, DnpSettings, GenerateResult, describe_dns,
                      generate, sample_id)
    from .models import load_pipeline

_API = ("METHODS", "AnswerSettings", "ApgSettings", "CnpSettings", "DnpSettings", "GenerateResult", "describe_dns",
        "generate", "sample_id")
_HOMES = {**{name: "api" for name in _API}, "load_pipeline": "models"}

__all__ = [*_API, "load_pipeline"]
__version__ = "0.1.0"


__getattr__ = lazy_names(__name__, globals(), _HOMES)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
