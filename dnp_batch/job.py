"""The generation job: plan shards, check each output (resume / refuse / overwrite), run the
stages through a distributor, write the indexes and manifests, and summarize.

A job is one or more *points* — (name, config, output) — over the same samples: a plain run is
one point, a sweep one per grid point. All points' shards go through one set of stages, so points
that share a model share its loaded copy. Distributors share one signature,
`(specs, tasks, cfgs) -> iterator of rows`, where `tasks` (a `ShardTasks`) is a compact list of the
shards to make that builds each shard's row on demand (from the prompts file, for a `PromptSet`), so
neither the driver nor the object store holds every sample: `run_local` runs the stages in this
process; `dag.run_ray` runs them as Ray Data actor pools.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
from tqdm.auto import tqdm

from .config import JobConfig
from .models import library_versions
from .prompts import PromptSet, Sample, Samples, as_samples, shard_sizes
from .runs import check_shard
from .sink import ShardSink
from .rows import new_row
from .stages import StageSpec, WriteStage, build_stages, check_samples, check_sources


class ShardTasks:
    """The shards a job makes, as (point, shard) pairs: `row(j)` builds task j's shard row (its
    config, output and samples) where it is called — in a Ray worker, reading the prompts file — so
    the list itself stays small (16 bytes a shard, plus the samples' PromptSet index)."""

    def __init__(self, samples: "Samples | PromptSet", cfgs: list[JobConfig], outs: list[str],
                 pairs: list[tuple[int, int]]):
        self.samples, self.cfgs, self.outs = samples, cfgs, outs
        self.pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.pairs)

    def row(self, j: int) -> dict:
        point, shard = (int(x) for x in self.pairs[j])
        cfg = self.cfgs[point]
        return new_row(shard, cfg, self.outs[point], self.samples.shard(shard, cfg.output.samples_per_shard))


def run_local(specs: list[StageSpec], tasks: ShardTasks, cfgs: list[JobConfig]) -> Iterator[dict]:
    """The in-process distributor: each stage built once, every shard through all of them."""
    stages = [spec.cls(cfgs) for spec in specs]
    for j in range(len(tasks)):
        row = tasks.row(j)
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
    shards: int = 0  # shard i holds samples [i·S, (i+1)·S), S = cfg.output.samples_per_shard
    manifest: dict = None
    existed: bool = False
    summary: Summary = field(default_factory=Summary)


def prepare(point: Point, samples: "Samples | PromptSet", resume: bool, overwrite: bool) -> None:
    """Every check that can fail on bad input for one point, before anything is written."""
    cfg, out = point.cfg, point.out
    check_samples(cfg, samples)
    check_sources(cfg)
    sink = ShardSink(out)
    per_shard = cfg.output.samples_per_shard
    shards = len(shard_sizes(len(samples), per_shard))
    manifest = {"config": cfg.model_dump(mode="json"), "plan_sha256": samples.digest(per_shard),
                "samples": len(samples), "shards": shards, "versions": library_versions()}
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
    point.sink, point.shards, point.manifest = sink, shards, manifest


def run_points(points: list[Point], samples: "list[Sample] | PromptSet", distributor: Callable = run_local,
               resume: bool = False, overwrite: bool = False, log=None) -> list[Point]:
    """Generate, for every point, the samples not yet written to its output. `samples`: a list (held
    in memory) or a `PromptSet` (streamed from its file: the driver holds only its index)."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    samples = as_samples(samples)
    for point in points:
        prepare(point, samples, resume, overwrite)
    pairs, by_out, todo_samples = [], {}, 0
    for index, point in enumerate(points):
        if overwrite:
            point.sink.clear()
        done = point.sink.done_shards()
        for shard in sorted(done):  # a shard left truncated or corrupted by a crash is made again
            problems, _ = check_shard(point.sink.fs, point.sink.root, shard)
            if problems:
                log(f"{point.name}: regenerating shard {shard:05d}: {problems[0]}")
                done.discard(shard)
        sizes = shard_sizes(len(samples), point.cfg.output.samples_per_shard)
        todo = [shard for shard in range(point.shards) if shard not in done]
        point.summary = Summary(skipped_shards=point.shards - len(todo), shards=point.shards)
        if done:
            log(f"{point.name}: resuming: {len(done)} of {point.shards} shards already written")
        point.existed = point.sink.fs.exists(point.sink.root)
        point.sink.write_manifest({**point.manifest, "status": "running"})
        pairs += [(index, shard) for shard in todo]
        todo_samples += sum(sizes[shard] for shard in todo)
        by_out[point.out] = point
    cfgs = [p.cfg for p in points]
    tasks = ShardTasks(samples, cfgs, [p.out for p in points], pairs)
    specs = build_stages(cfgs)
    # A local or in-memory --out is this machine's: the driver writes it. Shared storage (s3://,
    # gs://, ...) is written by the write stage's workers, in parallel.
    writer = WriteStage(cfgs) if all(p.sink.is_local for p in points) else None
    progress = Progress(todo_samples, log)
    t_run = time.perf_counter()
    try:
        for row in distributor(specs[:-1] if writer else specs, tasks, cfgs):
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
            "shards": point.shards, "generated_this_run": point.summary.samples}})
        point.sink.finish()
    return points


def run(cfg: JobConfig, samples: "list[Sample] | PromptSet", out: str, distributor: Callable = run_local,
        resume: bool = False, overwrite: bool = False, log=None) -> Summary:
    """A plain run: one point."""
    (point,) = run_points([Point("run", cfg, out)], samples, distributor, resume, overwrite, log)
    return point.summary
