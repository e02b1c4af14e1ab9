"""A toy world where prompt adherence is measured exactly on a CPU.

- `data`: scenes of one or two coloured shapes at 32×32, their captions in a small grammar, and
  its parser (`sample_scene`, `render`, `caption`, `parse_caption`, `dataset`, `prompts`).
- `judge`: an analytic detector; `judge(image, caption)` gives per-attribute correctness,
  `describe(image)` a caption, `JudgeCaptioner` an exact captioner for auto-DNP / CNP.
- `model`, `train`: a small `StableDiffusionPipeline` trained on the CPU
  (`python -m dnp_batch.toyworld.train --out models/toy-shapes --minutes 40`).
- `evaluate`: adherence of a model under any method (`python -m dnp_batch.toyworld.evaluate`).
"""

from .data import Obj, Scene, Spec, caption, dataset, parse_caption, prompts, render, sample_scene
from .judge import JudgeCaptioner, describe, detect, judge_many

# `judge` (the function) stays in `toyworld.judge`, so the submodule keeps its name here.
__all__ = ["Obj", "Scene", "Spec", "caption", "dataset", "parse_caption", "prompts", "render", "sample_scene",
           "JudgeCaptioner", "describe", "detect", "judge_many"]
