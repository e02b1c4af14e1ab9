"""The write stage: encode the images and write the shard. It loads no model (and no torch)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Callable

from ..rows import add_timing, contents
from ..sink import ShardSink, encode_image

if TYPE_CHECKING:
    from ..config import JobConfig


class WriteStage:
    """Encode the images and write the shard (tar + its index) to the row's output; returns a summary."""

    takes_configs = False  # it reads the row's `output`, so an actor of it never unpickles a JobConfig

    def __init__(self, cfgs: list[JobConfig] | None = None, where: Callable[[], dict] | None = None):
        self._sinks: dict[str, ShardSink] = {}

    name = "write"

    def __call__(self, row: dict) -> dict:
        t0 = time.perf_counter()
        shard, out = int(row["shard"]), row["out"]
        _, items = contents(row)
        output = json.loads(row["output"])
        fmt, quality = output["image_format"], output["quality"]
        for item in items:
            if not item.get("error"):
                item["image"] = encode_image(item["image"], fmt, quality)
                if item.get("dns_image") is not None:
                    item["dns_image"] = encode_image(item["dns_image"], fmt, quality)
        sink = self._sinks.setdefault(out, ShardSink(out))
        sink.write_shard(shard, items, fmt)
        scores = [item["record"].get("clip_score") for item in items if not item.get("error")]
        return {"out": out, "shard": shard, "samples": len(items), "failed": sum(1 for i in items if i.get("error")),
                "clip_scores": [s for s in scores if s is not None],
                "timings": add_timing(row, self.name, time.perf_counter() - t0)}
