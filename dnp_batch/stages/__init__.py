"""Stages: plain callable classes, one loaded model each, over one shard of samples at a time.

The same objects run in-process (the local distributor, tests) and as Ray Data actors (`dag.py`):
`Stage(cfgs)(row) -> row` over the shard rows of `dnp_batch.rows`. A shard is cut into the same
batches wherever it runs, so a sample's bytes do not depend on cluster shape or on resuming.

- `base`: the row loop, fault isolation (a failing batch retried sample by sample), placement
- `pipelines`: the per-process model cache and the stages that run a pipeline
- `generate`: auto-DNP's DNS + caption stage, and the configured method's generation stage
- `score`: every configured scorer, and the record fields a scorer adds (the toy judge's verdicts)
- `write`: encode the images and write the shard (no model, no torch)
- `checks`: what is refused before any work
- `plan`: the stage list of a job and the resources each asks for

Each name below is imported from its module on first use, so a Ray actor of one stage imports only
what that stage needs (the writer: no torch, no diffusers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_names

if TYPE_CHECKING:
    from .base import Stage, local_placement, resolve_device, run_isolated
    from .checks import check_samples, check_sources
    from .generate import DnsCaptionStage, GenerationStage
    from .plan import StageSpec, build_stages
    from .score import ScoringStage
    from .write import WriteStage

_HOMES = {"Stage": "base", "local_placement": "base", "resolve_device": "base", "run_isolated": "base",
          "check_samples": "checks", "check_sources": "checks", "DnsCaptionStage": "generate",
          "GenerationStage": "generate", "StageSpec": "plan", "build_stages": "plan", "ScoringStage": "score",
          "WriteStage": "write"}
__all__ = sorted(_HOMES)


__getattr__ = lazy_names(__name__, globals(), _HOMES)
