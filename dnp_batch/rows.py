"""The shard row: what flows between stages, in process and through Ray Data.

    {"shard": i, "out": URL, "config": bytes, "output": json, "payload": bytes, "timings": json}

`config` pickles the shard's `JobConfig`, unpickled only by the stages that run a model; `output`
holds what the writer needs of it (image format and quality), so the writer never imports the
config (nor torch); `payload` pickles the shard's samples and one item per sample that the stages
fill in (images, records, errors); `timings` holds each stage's busy seconds on the shard so far.
"""

from __future__ import annotations

import json
import pickle
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import JobConfig
    from .prompts import Sample


def new_row(shard: int, cfg: JobConfig, out: str, samples: list[Sample]) -> dict:
    """A shard before any stage: its config and output, one item per sample to be filled in."""
    items = [{"key": s.key, "record": {"id": s.key, "prompt": s.prompt, "seed": s.seed}} for s in samples]
    output = {"image_format": cfg.output.image_format, "quality": cfg.output.quality}
    return {"shard": shard, "out": out, "config": pickle.dumps(cfg), "output": json.dumps(output),
            "payload": pickle.dumps((samples, items)), "timings": "{}"}


def config(row: dict) -> JobConfig:
    return pickle.loads(row["config"])


def contents(row: dict) -> tuple[list[Sample], list[dict]]:
    """The shard's samples and their items."""
    return pickle.loads(row["payload"])


def updated(row: dict, samples: list[Sample], items: list[dict], stage: str, seconds: float) -> dict:
    """The row after `stage`: its items as the stage left them, and its `seconds` added to the timings."""
    return {**row, "payload": pickle.dumps((samples, items)), "timings": add_timing(row, stage, seconds)}


def add_timing(row: dict, stage: str, seconds: float) -> str:
    """The row's timings with this stage's seconds added."""
    timings = json.loads(row.get("timings") or "{}")
    timings[stage] = timings.get(stage, 0.0) + seconds
    return json.dumps(timings)
