"""A toy world where prompt adherence is measured exactly on a CPU.

- `data`: scenes of one or two coloured shapes at 32×32, their captions in a small grammar, and
  its parser (`sample_scene`, `render`, `caption`, `parse_caption`, `dataset`, `prompts`).
- `judge`: an analytic detector; `judge(image, caption)` gives per-attribute correctness,
  `describe(image)` a caption, `JudgeCaptioner` an exact captioner for auto-DNP / CNP.
- `model`, `train`: a small `StableDiffusionPipeline` trained on the CPU
  (`python -m dnp_batch.toyworld.train --out models/toy-shapes --minutes 40`).
- `evaluate`: adherence of a model under any method (`python -m dnp_batch.toyworld.evaluate`).
- `plugin`, `scorer`: the toy world as a dnp_batch plug-in (the `toy-shapes` model name and its
  defaults, the judge as captioner and scorer), which the core finds by its entry point.

The names below are imported from their modules on first use, so reading the plug-in (which the
core does when it reads a config) loads neither scipy nor the scenes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_names

if TYPE_CHECKING:
    from .data import Obj, Scene, Spec, caption, dataset, parse_caption, prompts, render, sample_scene
    from .judge import JudgeCaptioner, describe, detect, judge_many

# `judge` (the function) stays in `toyworld.judge`, so the submodule keeps its name here.
_HOMES = {**{n: "data" for n in ("Obj", "Scene", "Spec", "caption", "dataset", "parse_caption", "prompts", "render",
                                 "sample_scene")},
          **{n: "judge" for n in ("JudgeCaptioner", "describe", "detect", "judge_many")}}
__all__ = list(_HOMES)
__getattr__ = lazy_names(__name__, globals(), _HOMES)
