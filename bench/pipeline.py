"""What the Ray pipeline costs: the job's throughput against a bare diffusers loop, and the driver's
peak memory when a long prompt file is streamed through Ray Data.

    python bench/pipeline.py [--config configs/tiny-sd.yaml] [--method cfg] [--samples 16]
                             [--models tiny,medium] [--prompt-counts 2000,20000]

1. Throughput, for each of `--models`: `tiny`, the config's model (the tiny SD by default), where a
   call's fixed costs dominate, and `medium`, the medium SD-layout model of bench/medium.py (UNet
   5.6 M parameters, 256² images, the config's other settings), where the UNet dominates. `ray_job` is `dnp_batch.job.run` with the Ray
   distributor on a fresh private local Ray instance; its wall time covers everything: Ray's
   start-up, the stage actors' start-up and model loads, generation, PNG encoding and writing the
   shards. `ray_stage_generate` is the rate of generation alone inside the job's stage actor (the
   per-sample `seconds` of the records: each batch's time over its size; no start-up, model load or
   PNG encoding), and `ray_job_startup_and_other` the job's wall time minus that generation time.
   (A rate between the first and the last shard written is not reported: with the few shards that
   fit in a quick run, shards arrive bunched and out of order, and it overstates.)
   `bare_diffusers` loads the same pipeline in this process (the load is not timed) and calls
   `pipe(prompt=p, ...)` once per sample, PNG-encoding each image, with the same torch thread count as the stages;
   `bare_diffusers_batched` passes `batch_size` prompts per call, as the job's stage batches (on a
   tiny model a call's fixed cost dominates, so batching alone changes the rate). CLIP scoring
   is off in the job unless `--clip` is given, so both sides do the same work; with a method other
   than cfg the bare loop is still plain CFG, and the ratio includes the method's own cost.
2. Memory: for each prompt count, a fresh subprocess writes a TXT prompts file and runs the job's own
   streaming path with a trivial stage: `PromptSet` (one pass over the file; the driver keeps an
   index of 24 bytes a row), `ShardTasks` (16 bytes a shard) and `dag.build_dataset` (a Ray Data
   source of shard ids; the first stage's actor reads each shard's rows from the file), consuming each
   summary as it arrives. It reports its own peak RSS from just before the prompts are read to the
   end (on Linux the high-water mark is reset there, since imports and Ray start-up peak higher than
   the stream; elsewhere `ru_maxrss`, which includes them), its RSS at that point, the pickled size
   of the task list (`rows_mb`, put once into the object store), the seconds of the index pass and
   of the stream, and the object store's usage, sampled while streaming.

Times are wall-clock, measured in this run on this machine; only the ratios measured in one run
mean anything. The throughput part runs `--repeats` times (a fresh Ray job and bare loop each) and
prints the median with the min and max: on a tiny model one run's ratio is noise. Output lines are whitespace-separated: `throughput MODEL NAME RATE samples/s`,
`seconds MODEL NAME VALUE`, `ratio MODEL NAME VALUE` (`ratio memory HI/LO VALUE`), `memory N
prompts` then `name value` pairs, a `config MODEL ...` line per model and one `note` line.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "tiny-sd.yaml"


def _max_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    kb = resource.getrusage(who).ru_maxrss
    return kb / 2**20 if sys.platform == "darwin" else kb / 2**10  # bytes on macOS, KiB on Linux


def _proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    return None


def _reset_peak_rss() -> float:
    """Reset this process's RSS high-water mark to its current RSS (Linux: clear_refs 5), so a later
    peak covers only what follows; returns the RSS it starts from. Elsewhere: the peak so far."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        rss = _proc_status_mb("VmRSS")
        if rss is not None:
            return rss
    except OSError:
        pass
    return _max_rss_mb()


def _peak_rss() -> float:
    hwm = _proc_status_mb("VmHWM")
    return hwm if hwm is not None else _max_rss_mb()


def _quiet_ray_data() -> None:
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False


# --- 1. throughput ---------------------------------------------------------------------------------

def _samples(n: int):
    from dnp_batch.prompts import expand_samples

    return expand_samples([{"prompt": f"a photo of object number {i}, studio lighting"} for i in range(n)], 1)


def bench_ray_job(cfg, samples) -> tuple[float, float]:
    """(samples/s over the whole job's wall time, samples/s of generation alone inside the stage)."""
    import pyarrow.parquet as pq

    from dnp_batch.dag import run_ray
    from dnp_batch.job import run

    out = tempfile.mkdtemp(prefix="dnp-bench-out-")
    try:
        t0 = time.perf_counter()
        summary = run(cfg, samples, out, run_ray)
        total = time.perf_counter() - t0
        records = [json.loads(r) for r in pq.read_table(Path(out) / "index.parquet").column("record").to_pylist()]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if summary.failed:
        raise RuntimeError(f"the job failed {summary.failed} of {summary.samples} samples")
    generating = sum(r["seconds"] for r in records)  # each record holds its batch's seconds / batch size
    return len(samples) / total, len(records) / generating


def bench_bare(cfg, samples) -> tuple[float, float]:
    """(samples/s one prompt per pipe call, samples/s cfg.batch_size prompts per call as the job batches)."""
    import torch

    from dnp_batch import load_pipeline
    from dnp_batch.sink import encode_image
    from dnp_batch.names import resolve_model
    from dnp_batch.stages import resolve_device

    device = resolve_device(cfg.device)
    if device == "cpu":
        torch.set_num_threads(cfg.cpu_threads)
    pipe = load_pipeline(resolve_model(cfg.model), dtype=cfg.dtype, device=device, scheduler=cfg.scheduler)
    rates = []
    for size in (1, cfg.batch_size):
        t0 = time.perf_counter()
        for start in range(0, len(samples), size):
            batch = samples[start:start + size]
            generators = [torch.Generator().manual_seed(s.seed) for s in batch]
            images = pipe(prompt=[s.prompt for s in batch] if size > 1 else batch[0].prompt,
                          guidance_scale=cfg.guidance_scale, num_inference_steps=cfg.steps, height=cfg.height,
                          width=cfg.width, generator=generators if size > 1 else generators[0],
                          output_type="pil").images
            for image in images:
                encode_image(image, cfg.output.image_format, cfg.output.quality)
        rates.append(len(samples) / (time.perf_counter() - t0))
    return rates[0], rates[1]


def _model_overrides(model: str, tmp: str) -> dict:
    """Config overrides that select the bench's model: the config's own (`tiny`) or the medium
    SD-layout model (bench/medium.py), saved as a diffusers directory that the job loads."""
    if model == "tiny":
        return {}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from medium import SIZE, save_medium

    return {"model": str(save_medium(Path(tmp) / "medium-sd")), "height": SIZE, "width": SIZE}


def throughput(args, model: str) -> None:
    from dnp_batch.config import load_config
    from dnp_batch.names import resolve_model

    overrides = {"output": {"samples_per_shard": args.samples_per_shard}}
    if not args.clip:
        overrides["clip"] = {"model": None}
    tmp = tempfile.mkdtemp(prefix="dnp-bench-model-")
    try:
        cfg = load_config(args.config, method=args.method, **overrides, **_model_overrides(model, tmp))
        resolve_model(cfg.model)  # build the tiny model into the cache now, not inside either timing
        if cfg.clip.model:
            resolve_model(cfg.clip.model)
        samples = _samples(args.samples)
        _quiet_ray_data()
        runs = []  # one dict of rates per repetition, each a fresh Ray job and bare loop
        for _ in range(args.repeats):
            job_rate, stage_rate = bench_ray_job(cfg, samples)
            bare_rate, batched_rate = bench_bare(cfg, samples)
            runs.append({"ray_job": job_rate, "ray_stage_generate": stage_rate, "bare_diffusers": bare_rate,
                         "bare_diffusers_batched": batched_rate})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shards = -(-len(samples) // cfg.output.samples_per_shard)
    print(f"config  {model}  {Path(args.config).name}  method {cfg.method}  steps {cfg.steps}  "
          f"size {cfg.height or 'native'}  samples {len(samples)}  shards {shards}  batch_size {cfg.batch_size}  "
          f"threads {cfg.cpu_threads}  clip {'on' if cfg.clip.model else 'off'}  repeats {args.repeats}")

    def spread(values) -> str:
        return f"{statistics.median(values):.3f}  (min {min(values):.3f}, max {max(values):.3f})"

    for name in runs[0]:
        print(f"throughput  {model}  {name}  {spread([r[name] for r in runs])} samples/s")
    for top, bottom in (("ray_job", "bare_diffusers"), ("ray_job", "bare_diffusers_batched"),
                        ("ray_stage_generate", "bare_diffusers_batched")):
        short = bottom.replace("_diffusers", "")
        print(f"ratio  {model}  {top}/{short}  {spread([r[top] / r[bottom] for r in runs])}")
    print(f"seconds  {model}  ray_job_startup_and_other  "
          f"{spread([len(samples) / r['ray_job'] - len(samples) / r['ray_stage_generate'] for r in runs])}")
    sys.stdout.flush()


# --- 2. memory -----------------------------------------------------------------------------------

class _Summarize:
    """The trivial stage: unpack the shard row and return a tiny summary."""

    def __init__(self, cfgs, where=None):
        pass

    def __call__(self, row: dict) -> dict:
        from dnp_batch.rows import contents

        samples, _items = contents(row)
        return {"shard": int(row["shard"]), "n": len(samples)}


def _object_store_mib(gcs_address: str) -> int | None:
    """Plasma usage across the cluster, in whole MiB (what Ray's memory summary reports)."""
    try:
        from ray._private import internal_api

        text = internal_api.memory_summary(address=gcs_address, stats_only=True)
        m = re.search(r"Plasma memory usage (\d+) MiB", text)
        return int(m.group(1)) if m else None
    except Exception:  # noqa: BLE001 - a private API; the number is optional
        return None


def stream(n: int, per_shard: int) -> None:
    """The hidden `--_stream N` mode: one prompt count, in this (fresh) process; prints key=value."""
    from dnp_batch.dag import build_dataset, make_ray_private  # before `ray`: see dnp_batch.dag

    import ray
    import ray.data

    from dnp_batch.config import StageResources, load_config
    from dnp_batch.job import ShardTasks
    from dnp_batch.prompts import PromptSet, shard_sizes
    from dnp_batch.stages import StageSpec

    make_ray_private()
    ctx = ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=os.environ.get("RAY_TMPDIR"))
    _quiet_ray_data()
    gcs = ctx.address_info["gcs_address"]
    tmp = tempfile.mkdtemp(prefix="dnp-bench-prompts-")
    try:
        path = Path(tmp) / "prompts.txt"
        with open(path, "w") as f:
            for i in range(n):
                f.write(f"a synthetic prompt number {i}: a red fox in the snow, detailed, photograph\n")
        process_peak = _max_rss_mb()  # imports and Ray start-up
        baseline = _reset_peak_rss()
        t0 = time.perf_counter()
        samples = PromptSet(path, 1)  # one streaming pass: the driver keeps an index of the file
        index_seconds = time.perf_counter() - t0
        cfg = load_config(output={"samples_per_shard": per_shard})
        shards = len(shard_sizes(len(samples), per_shard))
        tasks = ShardTasks(samples, [cfg], [tmp], [(0, i) for i in range(shards)])
        rows_mb = len(pickle.dumps(tasks)) / 2**20  # what the driver puts in the object store, once
        spec = StageSpec("summarize", _Summarize, StageResources(actors=1, num_cpus=0.5))
        ds = build_dataset([spec], tasks, [cfg])
        store = [_object_store_mib(gcs)]
        seen = done = 0
        sampled = time.perf_counter()
        for summary in ds.iter_rows():
            seen += summary["n"]
            done += 1
            if time.perf_counter() - sampled > 2.0:  # the summary is an RPC: sample it every 2 s
                store.append(_object_store_mib(gcs))
                sampled = time.perf_counter()
        store.append(_object_store_mib(gcs))
        if seen != n:
            raise RuntimeError(f"streamed {seen} samples, expected {n}")
        store = [s for s in store if s is not None]
        print(f"samples={seen} shards={shards} rows_mb={rows_mb:.2f} index_s={index_seconds:.1f} "
              f"stream_s={time.perf_counter() - t0 - index_seconds:.1f} startup_peak_rss_mb={process_peak:.1f} "
              f"baseline_rss_mb={baseline:.1f} peak_rss_mb={_peak_rss():.1f} "
              f"object_store_peak_mib={max(store) if store else 'n/a'}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        ray.shutdown()


def memory(args) -> None:
    counts = [int(c) for c in args.prompt_counts.split(",") if c.strip()]
    peaks = {}
    for n in counts:
        proc = subprocess.run([sys.executable, __file__, "--_stream", str(n), "--per-shard", str(args.per_shard)],
                              capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout + proc.stderr)
            raise RuntimeError(f"the streaming subprocess for {n} prompts exited with {proc.returncode}")
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("samples=")][-1]
        got = dict(kv.split("=", 1) for kv in line.split())
        peaks[n] = float(got["peak_rss_mb"])
        growth = peaks[n] - float(got["baseline_rss_mb"])
        print(f"memory  {n} prompts  peak_rss_mb {got['peak_rss_mb']}  baseline_rss_mb {got['baseline_rss_mb']}  "
              f"growth_mb {growth:.1f}  rows_mb {got['rows_mb']}  shards {got['shards']}  "
              f"startup_peak_rss_mb {got['startup_peak_rss_mb']}  object_store_peak_mib {got['object_store_peak_mib']}  "
              f"index_s {got['index_s']}  stream_s {got['stream_s']}")
    if len(counts) >= 2:
        lo, hi = counts[0], counts[-1]
        print(f"ratio  memory {hi}/{lo}  {peaks[hi] / peaks[lo]:.3f}")
    print("note  peak_rss_mb: the driver process only, from just before the prompts are read (baseline_rss_mb: "
          "its RSS then, after imports and ray.init); Ray's own processes are not counted. rows_mb: the pickled "
          "task list (the PromptSet index and the shard list) the driver puts in the object store once; the "
          "object store is sampled while streaming, in whole MiB")
    sys.stdout.flush()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="job YAML config (default: tiny SD)")
    parser.add_argument("--method", default="cfg", help="overrides the config's method (default: cfg)")
    parser.add_argument("--models", default="tiny,medium",
                        help="throughput models, comma-separated: tiny (the config's), medium (bench/medium.py)")
    parser.add_argument("--samples", type=int, default=16, help="samples for the throughput part")
    parser.add_argument("--samples-per-shard", type=int, default=4, help="the job's shard size (default 4)")
    parser.add_argument("--clip", action="store_true", help="keep the config's CLIP scoring stage in the job")
    parser.add_argument("--repeats", type=int, default=3, help="throughput repetitions: medians and spread")
    parser.add_argument("--prompt-counts", default="2000,20000", help="comma-separated prompt counts")
    parser.add_argument("--per-shard", type=int, default=100, help="samples per shard in the memory part")
    parser.add_argument("--skip-throughput", action="store_true", help="only the memory part")
    parser.add_argument("--_stream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    unknown = set(args.models.split(",")) - {"tiny", "medium"}
    if unknown:
        parser.error(f"--models: unknown model(s) {', '.join(sorted(unknown))}; choose from tiny, medium")
    if args._stream is not None:
        stream(args._stream, args.per_shard)
        return
    own_tmp = None
    if not os.environ.get("RAY_TMPDIR"):
        own_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's unix socket paths must fit
        os.environ["RAY_TMPDIR"] = own_tmp
    try:
        if not args.skip_throughput:
            for model in args.models.split(","):
                throughput(args, model.strip())
        memory(args)
    finally:
        if own_tmp:
            shutil.rmtree(own_tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
