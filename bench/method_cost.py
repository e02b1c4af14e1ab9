"""What a method costs beyond its NFE, and whether the two-stage methods reload models per shard.

    python bench/method_cost.py [--batch-sizes 1,2,4,8] [--steps 10] [--repeats 7] [--family sd3|qwenimage]

1. On a medium SD-layout model built from a config (random weights; UNet channels (64, 128), two
   layers a block, 32² latents), one torch thread: for each batch size, the median wall time of
   `generate()` with CFG and with ANSWER (docs/METHODS.md defaults, latents out: the sampling loop and
   text encoding, no VAE decode), and each one's NFE counted by a hook on the UNet (rows per
   forward pass). ANSWER's cost is "within its NFE" when wall(answer)/wall(cfg) is within 5% of
   NFE(answer)/NFE(cfg); the last column is that gap. `--family sd3` / `qwenimage`: the same on that
   flow-matching family's tiny twin at 64² instead (a transformer; Qwen-Image calls it once per branch).
2. Model loads per job: a local job of several shards with `auto-dnp` and with `cnp` on the tiny SD
   model (tiny BLIP-2 captioner), counting every pipeline and captioner load: each should be 1,
   whatever the number of shards.
Times are wall-clock, measured in this run; only the ratios mean anything.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from medium import medium_pipeline  # noqa: E402


def timed_pair(pipe, batch: int, steps: int, repeats: int, size: int | None = None) -> dict:
    """CFG and ANSWER on one batch of `batch` prompts, timed in alternation (cfg, answer, cfg, ...)
    so that drift in the machine's speed falls on both alike: per method the median seconds and the
    NFE, and the median, min and max of the per-repetition ratios answer/cfg."""
    from dnp_batch import generate

    from dnp_batch import families

    rows: list[int] = []
    hook = families.network(pipe).register_forward_pre_hook(
        lambda module, args, kwargs: rows.append((args[0] if args else kwargs["hidden_states"]).shape[0]),
        with_kwargs=True)
    prompts, seeds = [f"a photo of object {i}" for i in range(batch)], list(range(batch))
    times: dict[str, list[float]] = {"cfg": [], "answer": []}
    nfe: dict[str, int] = {}

    def once(method: str) -> float:
        rows.clear()
        t0 = time.perf_counter()
        generate(pipe, prompts, seeds, method=method, num_inference_steps=steps, batch_size=batch, height=size,
                 width=size, output_type="latent")
        seconds = time.perf_counter() - t0
        nfe[method] = sum(rows)
        return seconds

    try:
        for method in times:  # warm-up, not timed
            once(method)
        for _ in range(repeats):
            for method in times:
                times[method].append(once(method))
    finally:
        hook.remove()
    ratios = [a / c for a, c in zip(times["answer"], times["cfg"])]
    return {"cfg_s": statistics.median(times["cfg"]), "answer_s": statistics.median(times["answer"]),
            "nfe": nfe["answer"] / nfe["cfg"], "wall": statistics.median(ratios), "lo": min(ratios), "hi": max(ratios)}


def method_cost(args) -> None:
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    if args.family:
        from dnp_batch.models import load_pipeline
        from dnp_batch.tiny import ensure_tiny

        pipe, size = load_pipeline(ensure_tiny(args.family)), 64
        print(f"model  tiny {args.family} twin, transformer {sum(p.numel() for p in pipe.transformer.parameters()) / 1e6:.2f}"
              f" M params, 64², {args.steps} steps, 1 thread, {args.repeats} alternating repeats (medians)")
    else:
        pipe, size = medium_pipeline(), None
        print(f"model  medium SD layout, UNet {sum(p.numel() for p in pipe.unet.parameters()) / 1e6:.1f} M params, "
              f"32² latents, {args.steps} steps, 1 thread, {args.repeats} alternating repeats (medians)")
    print("cost  batch  cfg_s  answer_s  wall_ratio  (min, max)  nfe_ratio  gap")
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        r = timed_pair(pipe, batch, args.steps, args.repeats, size)
        print(f"cost  {batch}  {r['cfg_s']:.3f}  {r['answer_s']:.3f}  {r['wall']:.3f}  ({r['lo']:.3f}, {r['hi']:.3f})  "
              f"{r['nfe']:.3f}  {r['wall'] / r['nfe'] - 1:+.3f}", flush=True)


def model_loads(args) -> None:
    """Run local jobs of `--shards` shards and count model loads in the stages."""
    from dnp_batch.stages import pipelines as stages
    from dnp_batch.config import load_config
    from dnp_batch.job import run, run_local
    from dnp_batch.prompts import expand_samples

    counts = {"pipeline": 0, "captioner": 0}
    load_pipeline, captioner_cls = stages.load_pipeline, stages.Captioner

    def counting_load(*a, **kw):
        counts["pipeline"] += 1
        return load_pipeline(*a, **kw)

    class CountingCaptioner(captioner_cls):
        def __init__(self, *a, **kw):
            counts["captioner"] += 1
            super().__init__(*a, **kw)

    stages.load_pipeline, stages.Captioner = counting_load, CountingCaptioner
    try:
        samples = expand_samples([{"prompt": f"a photo of object {i}"} for i in range(args.shards)], 1)
        for method in ("auto-dnp", "cnp"):
            counts.update(pipeline=0, captioner=0)
            cfg = load_config(REPO / "configs" / "tiny-sd.yaml", method=method,
                              sets=["output.samples_per_shard=1", "clip.model=null"])
            with tempfile.TemporaryDirectory() as out:
                summary = run(cfg, samples, out, run_local, log=lambda msg: None)
            print(f"loads  {method}  shards {summary.shards}  pipeline {counts['pipeline']}  "
                  f"captioner {counts['captioner']}", flush=True)
    finally:
        stages.load_pipeline, stages.Captioner = load_pipeline, captioner_cls


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", default="1,2,4,8")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--shards", type=int, default=4, help="shards of the model-load jobs")
    p.add_argument("--family", choices=["sd3", "qwenimage"], help="the cost part on this flow family's tiny twin "
                                                                  "(the model-load part is then skipped)")
    args = p.parse_args(argv)
    method_cost(args)
    if not args.family:
        model_loads(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
