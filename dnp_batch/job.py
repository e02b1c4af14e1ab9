"""The generation job: plan shards, check each output (resume / refuse / overwrite), run the
stages through a distributor, write the indexes and manifests, and summarize.

A job is one or more *points* — (name, config, output) — over the same samples: a plain run is
one point, a sweep one per grid point. All points' shards go through one set of stages, so points
that share a model share its loaded copy. Distributors share one signature,
`(specs, rows, cfgs) -> iterator of rows`: `run_local` runs the stages in this process;
`dag.run_ray` runs them as Ray Data actor pools.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from tqdm.auto import tqdm

from .config import JobConfig
from .models import library_versions
from .prompts import Sample
from .runs import check_shard
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


def run_local(specs: list[StageSpec], rows: list[dict], cfgs: list[JobConfig]) -> Iterator[dict]:
    """The in-process distributor: each stage built once, every shard through all of them."""
    stages = [spec.cls(cfgs) for spec in specs]
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
    startup: float = 0.0  # until the first shard came back (Ray, actors, model loads, that shard)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # busy time per stage, summed over shards

    def line(self, method: str) -> str:
        rate = self.samples / self.seconds if self.seconds else 0.0
        clip = f", mean CLIP score ({method}) {statistics.fmean(self.clip_scores):.2f}" if self.clip_scores else ""
        resumed = f" ({self.skipped_shards} already done)" if self.skipped_shards else ""
        return (f"{self.samples} samples ({self.failed} failed) in {self.shards} shards{resumed}, "
                f"{self.seconds:.1f} s, {rate:.2f} samples/s{clip}")

    def time_line(self) -> str:
        """Where the time went: the first shard's latency (start-up: Ray, actors, model loads), then
        each stage's busy seconds summed over shards (under Ray the stages overlap)."""
        stages = ", ".join(f"{name} {sec:.1f} s" for name, sec in self.stage_seconds.items())
        return (f"time: first shard after {self.startup:.1f} s (start-up included)"
                + (f"; busy per stage: {stages}" if stages else ""))


class Progress:
    """Samples done, samples/s and ETA: a tqdm bar on a terminal, else one line per shard (Ray logs)."""

    def __init__(self, total: int, log):
        self.total, self.done, self.log, self.t0 = total, 0, log, time.perf_counter()
        self.bar = tqdm(total=total, unit="sample", file=sys.stderr, disable=not sys.stderr.isatty(),
                        dynamic_ncols=True, smoothing=0.1)

    def update(self, n: int, text: str, failed: int) -> None:
        self.done += n
        self.bar.update(n)
        self.bar.set_postfix(failed=failed, refresh=False)
        if self.bar.disable:
            elapsed = time.perf_counter() - self.t0
            rate = self.done / elapsed if elapsed else 0.0
            eta = (self.total - self.done) / rate if rate else 0.0
            self.log(f"{text} ({self.done}/{self.total} samples this run, {failed} failed, {rate:.2f} samples/s, "
                     f"ETA {int(eta) // 60}:{int(eta) % 60:02d})")

    def close(self) -> None:
        self.bar.close()


@dataclass
class Point:
    """One output of a job: a config and where its run goes."""

    name: str
    cfg: JobConfig
    out: str
    sink: ShardSink = None
    plan: list = None
    manifest: dict = None
    existed: bool = False
    summary: Summary = field(default_factory=Summary)


def prepare(point: Point, samples: list[Sample], resume: bool, overwrite: bool) -> None:
    """Every check that can fail on bad input for one point, before anything is written."""
    cfg, out = point.cfg, point.out
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
    point.sink, point.plan, point.manifest = sink, plan, manifest


def run_points(points: list[Point], samples: list[Sample], distributor: Callable = run_local,
               resume: bool = False, overwrite: bool = False, log=None) -> list[Point]:
    """Generate, for every point, the samples not yet written to its output."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    for point in points:
        prepare(point, samples, resume, overwrite)
    rows, by_out, todo_samples = [], {}, 0
    for point in points:
        if overwrite:
            point.sink.clear()
        done = point.sink.done_shards()
        for shard in sorted(done):  # a shard left truncated or corrupted by a crash is made again
            problems, _ = check_shard(point.sink.fs, point.sink.root, shard)
            if problems:
                log(f"{point.name}: regenerating shard {shard:05d}: {problems[0]}")
                done.discard(shard)
        todo = [(shard, s) for shard, s in point.plan if shard not in done]
        point.summary = Summary(skipped_shards=len(point.plan) - len(todo), shards=len(point.plan))
        if done:
            log(f"{point.name}: resuming: {len(done)} of {len(point.plan)} shards already written")
        point.existed = point.sink.fs.exists(point.sink.root)
        point.sink.write_manifest({**point.manifest, "status": "running"})
        rows += [new_row(shard, point.cfg, point.out, s) for shard, s in todo]
        todo_samples += sum(len(s) for _, s in todo)
        by_out[point.out] = point
    cfgs = [p.cfg for p in points]
    specs = build_stages(cfgs)
    # A local or in-memory --out is this machine's: the driver writes it. Shared storage (s3://,
    # gs://, ...) is written by the write stage's workers, in parallel.
    writer = WriteStage(cfgs) if all(p.sink.is_local for p in points) else None
    progress = Progress(todo_samples, log)
    t_run = time.perf_counter()
    try:
        for row in distributor(specs[:-1] if writer else specs, rows, cfgs):
            if writer is not None:
                row = writer(row)
            point = by_out[row["out"]]
            summary = point.summary
            if not (summary.startup or summary.samples):
                summary.startup = time.perf_counter() - t_run
            summary.samples += row["samples"]
            summary.failed += row["failed"]
            summary.clip_scores += list(row["clip_scores"])
            for stage, sec in json.loads(row.get("timings") or "{}").items():
                summary.stage_seconds[stage] = summary.stage_seconds.get(stage, 0.0) + sec
            progress.update(row["samples"], f"{point.name}: shard {row['shard']:05d} written",
                            sum(p.summary.failed for p in points))
    except BaseException:
        for point in points:
            point.sink.remove_if_unstarted(point.existed)  # e.g. a model that fails to load: leave no trace
        raise
    finally:
        progress.close()
    for point in points:
        index, digests = point.sink.write_index()
        point.summary.seconds = time.perf_counter() - t0
        statuses = index.column("status").to_pylist()
        point.sink.write_manifest({**point.manifest, "status": "complete", "shard_digests": digests, "counts": {
            "samples": len(statuses), "ok": statuses.count("ok"), "failed": statuses.count("failed"),
            "shards": len(point.plan), "generated_this_run": point.summary.samples}})
        point.sink.finish()
    return points


def run(cfg: JobConfig, samples: list[Sample], out: str, distributor: Callable = run_local,
        resume: bool = False, overwrite: bool = False, log=None) -> Summary:
    """A plain run: one point."""
    (point,) = run_points([Point("run", cfg, out)], samples, distributor, resume, overwrite, log)
    return point.summary
