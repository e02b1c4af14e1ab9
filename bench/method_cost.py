"""What a method costs beyond its NFE, and whether the two-stage methods reload models per shard.

    python bench/method_cost.py [--batch-sizes 1,2,4,8] [--steps 10] [--repeats 3]

1. On a medium SD-layout model built from a config (random weights; UNet channels (64, 128), two
   layers a block, 32² latents), one torch thread: for each batch size, the median wall time of
   `generate()` with CFG and with ANSWER (METHODS.md defaults, latents out: the sampling loop and
   text encoding, no VAE decode), and each one's NFE counted by a hook on the UNet (rows per
   forward pass). ANSWER's cost is "within its NFE" when wall(answer)/wall(cfg) is within 5% of
   NFE(answer)/NFE(cfg); the last column is that gap.
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


def medium_pipeline():
    """A medium SD-layout pipeline: the tiny SD's text encoder and VAE, a bigger UNet, 32² latents."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from dnp_batch.tiny import SD_SCHEDULER_CONFIG, _text_config, _vae, clip_tokenizer

    tok = clip_tokenizer()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=32, in_channels=4, out_channels=4, block_out_channels=(64, 128),
                                layers_per_block=2, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=32)
    torch.manual_seed(1)
    pipe = StableDiffusionPipeline(vae=_vae(), text_encoder=CLIPTextModel(_text_config(tok)),
                                   tokenizer=tok, unet=unet, scheduler=DDIMScheduler.from_config(SD_SCHEDULER_CONFIG),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.register_to_config(_name_or_path="medium-sd (random weights)")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def timed_generate(pipe, method: str, batch: int, steps: int, repeats: int) -> tuple[float, int]:
    """(median seconds, NFE) of one generate() call of `batch` prompts."""
    from dnp_batch import generate

    rows: list[int] = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    prompts, seeds = [f"a photo of object {i}" for i in range(batch)], list(range(batch))
    times = []
    try:
        generate(pipe, prompts, seeds, method, num_inference_steps=steps, batch_size=batch, output_type="latent")
        for _ in range(repeats):
            rows.clear()
            t0 = time.perf_counter()
            generate(pipe, prompts, seeds, method, num_inference_steps=steps, batch_size=batch, output_type="latent")
            times.append(time.perf_counter() - t0)
    finally:
        hook.remove()
    return statistics.median(times), sum(rows)


def method_cost(args) -> None:
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    pipe = medium_pipeline()
    print(f"model  medium SD layout, UNet {sum(p.numel() for p in pipe.unet.parameters()) / 1e6:.1f} M params, "
          f"32² latents, {args.steps} steps, 1 thread, {args.repeats} repeats (medians)")
    print("cost  batch  cfg_s  answer_s  wall_ratio  nfe_ratio  gap")
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        cfg_s, cfg_nfe = timed_generate(pipe, "cfg", batch, args.steps, args.repeats)
        ans_s, ans_nfe = timed_generate(pipe, "answer", batch, args.steps, args.repeats)
        wall, nfe = ans_s / cfg_s, ans_nfe / cfg_nfe
        print(f"cost  {batch}  {cfg_s:.3f}  {ans_s:.3f}  {wall:.3f}  {nfe:.3f}  {wall / nfe - 1:+.3f}", flush=True)


def model_loads(args) -> None:
    """Run local jobs of `--shards` shards and count model loads in the stages."""
    from dnp_batch import stages
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
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shards", type=int, default=4, help="shards of the model-load jobs")
    args = p.parse_args(argv)
    method_cost(args)
    model_loads(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
