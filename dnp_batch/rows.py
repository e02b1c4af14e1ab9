"""The shard row: what flows between stages, in process and through Ray Data.

A row is `{"shard": i, "payload": bytes, "timings": json}`; the payload pickles the shard's config,
its output URL, its samples and one item per sample that the stages fill in (images, records,
errors); `timings` holds each stage's busy seconds on the shard so far.
"""

from __future__ import annotations

import json
import pickle
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import JobConfig
    from .prompts import Sample


def pack(shard: int, cfg: JobConfig, out: str, samples: list[Sample], items: list[dict], timings: str = "{}") -> dict:
    """A shard row; `timings` (JSON) is each stage's busy seconds on it so far."""
    return {"shard": shard, "payload": pickle.dumps((cfg, out, samples, items)), "timings": timings}


def add_timing(row: dict, stage: str, seconds: float) -> str:
    """The row's timings with this stage's seconds added."""
    timings = json.loads(row.get("timings") or "{}")
    timings[stage] = timings.get(stage, 0.0) + seconds
    return json.dumps(timings)


def unpack(row: dict) -> tuple[int, JobConfig, str, list[Sample], list[dict]]:
    cfg, out, samples, items = pickle.loads(row["payload"])
    return int(row["shard"]), cfg, out, samples, items


def new_row(shard: int, cfg: JobConfig, out: str, samples: list[Sample]) -> dict:
    """A shard before any stage: its config and output, one item per sample to be filled in."""
    items = [{"key": s.key, "record": {"id": s.key, "prompt": s.prompt, "seed": s.seed}} for s in samples]
    return pack(shard, cfg, out, samples, items)
