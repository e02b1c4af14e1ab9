"""The generation job: plan shards, check the output (resume / refuse / overwrite), run the stages
through a distributor, write the index and manifest, and summarize.

Distributors share one signature, `(specs, rows, cfg, out) -> iterator of shard summaries`:
`local` runs the stages in this process; `ray` (in `dag.py`) runs them as Ray Data actor pools.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .config import JobConfig
from .models import library_versions
from .prompts import Sample
from .sink import ShardSink
from .stages import StageSpec, WriteStage, build_stages, check_samples, check_sources, new_row


def plan_shards(samples: list[Sample], per_shard: int) -> list[tuple[int, list[Sample]]]:
    """Shard i holds samples[i·S:(i+1)·S], in prompt-file order."""
    return [(i, samples[start:start + per_shard]) for i, start in enumerate(range(0, len(samples), per_shard))]


def plan_digest(plan: list[tuple[int, list[Sample]]]) -> str:
    """What a shard holds must not change between a run and its resume."""
    blob = json.dumps([[s.key, s.prompt, s.negative_prompt] for _, shard in plan for s in shard] +
                      [[len(shard) for _, shard in plan]], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def run_local(specs: list[StageSpec], rows: list[dict], cfg: JobConfig, out: str) -> Iterator[dict]:
    """The in-process distributor: each stage built once, every shard through all of them."""
    stages = [spec.cls(cfg, out) for spec in specs]
    for row in rows:
        for stage in stages:
            row = stage(row)
        yield row


@dataclass
class Summary:
    samples: int = 0
    failed: int = 0
    shards: int = 0
    skipped_shards: int = 0
    seconds: float = 0.0
    clip_scores: list[float] = field(default_factory=list)

    def line(self, method: str) -> str:
        rate = self.samples / self.seconds if self.seconds else 0.0
        clip = f", mean CLIP score ({method}) {statistics.fmean(self.clip_scores):.2f}" if self.clip_scores else ""
        resumed = f" ({self.skipped_shards} already done)" if self.skipped_shards else ""
        return (f"{self.samples} samples ({self.failed} failed) in {self.shards} shards{resumed}, "
                f"{self.seconds:.1f} s, {rate:.2f} samples/s{clip}")


def prepare(cfg: JobConfig, samples: list[Sample], out: str, resume: bool = False, overwrite: bool = False):
    """Every check that can fail on bad input, before anything is written: returns (sink, plan, manifest)."""
    check_samples(cfg, samples)
    check_sources(cfg)
    sink = ShardSink(out)
    plan = plan_shards(samples, cfg.output.samples_per_shard)
    manifest = {"config": cfg.model_dump(mode="json"), "plan_sha256": plan_digest(plan),
                "samples": len(samples), "shards": len(plan), "versions": library_versions()}
    existing = sink.read_manifest()
    if overwrite:
        pass
    elif existing is not None:
        if (existing.get("config"), existing.get("plan_sha256")) != (manifest["config"], manifest["plan_sha256"]):
            what = "config" if existing.get("config") != manifest["config"] else "prompts, seeds or shard size"
            raise ValueError(f"--out {out} holds a run with a different {what}; pass --overwrite to replace it, "
                             "or write to another --out")
    elif resume:
        raise ValueError(f"--resume: --out {out} holds no run to resume (no manifest.json)")
    elif sink.has_foreign_files() or sink.done_shards():
        raise ValueError(f"--out {out} is not empty and holds no dnp_batch run; choose an empty --out")
    sink.check_writable()
    return sink, plan, manifest


def run(cfg: JobConfig, samples: list[Sample], out: str, distributor: Callable = run_local,
        resume: bool = False, overwrite: bool = False, log=None) -> Summary:
    """Generate every sample not yet written to `out`; returns the run's summary."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    sink, plan, manifest = prepare(cfg, samples, out, resume, overwrite)
    if overwrite:
        sink.clear()
    done = sink.done_shards()
    todo = [(shard, s) for shard, s in plan if shard not in done]
    summary = Summary(skipped_shards=len(plan) - len(todo), shards=len(plan))
    if done:
        log(f"resuming: {len(done)} of {len(plan)} shards already written")
    existed = sink.fs.exists(sink.root)
    sink.write_manifest({**manifest, "status": "running"})
    total = sum(len(s) for _, s in todo)
    specs = build_stages(cfg)
    # A local or in-memory --out is this machine's: the driver writes it. Shared storage (s3://,
    # gs://, ...) is written by the write stage's workers, in parallel.
    writer = WriteStage(cfg, out) if sink.is_local else None
    try:
        rows = distributor(specs[:-1] if writer else specs, [new_row(shard, s) for shard, s in todo], cfg, out)
        for row in rows:
            if writer is not None:
                row = writer(row)
            summary.samples += row["samples"]
            summary.failed += row["failed"]
            summary.clip_scores += list(row["clip_scores"])
            log(f"shard {row['shard']:05d} written: {summary.samples}/{total} samples ({summary.failed} failed)")
    except BaseException:
        sink.remove_if_unstarted(existed)  # e.g. a model that fails to load: leave no trace
        raise
    index = sink.write_index()
    summary.seconds = time.perf_counter() - t0
    statuses = index.column("status").to_pylist()
    sink.write_manifest({**manifest, "status": "complete", "counts": {
        "samples": len(statuses), "ok": statuses.count("ok"), "failed": statuses.count("failed"),
        "shards": len(plan), "generated_this_run": summary.samples}})
    sink.finish()
    return summary
