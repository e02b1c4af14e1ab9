"""The branches only a GPU user reaches, run once on a real GPU (the CPU tests run the same code in
float32/bfloat16): CUDA device, fp16, a compiled UNet, every scorer, and a job's stages.

    python bench/gpu_check.py [--json FILE]      # on a GPU; on a CPU it runs the same in bfloat16

1. The tiny SDXL in fp16 with `compile_unet`: CFG and ANSWER images are finite, and the compiled
   UNet's latents match the eager ones within 10% of their scale (16-bit rounding differs between
   fused and eager kernels; the float32 test in tests/test_gpu_options.py is exact to 1e-4).
2. Each scorer's tiny twin in fp16 on the GPU against float32 on the CPU (`clip` stays float32 by
   design): max abs difference of the scores of the same images.
3. A job (`dnp_batch.job.run`, stages in this process) of configs/tiny-scores.yaml in fp16 on the
   GPU, with the CFG method: no failed sample, and every record carries every configured score.
Exit status 1 if a check fails; the JSON keeps every number.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["a red cube left of a blue ball", "two green triangles"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    from dnp_batch import generate, load_pipeline
    from dnp_batch.config import load_config
    from dnp_batch.job import run, run_local
    from dnp_batch.prompts import expand_samples
    from dnp_batch.scorers import load_scorer
    from dnp_batch.tiny import ensure_tiny

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "float16" if device == "cuda" else "bfloat16"
    results = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "dtype": dtype,
               "torch": torch.__version__, "checks": {}}
    ok = True

    def check(name: str, passed: bool, **numbers) -> None:
        nonlocal ok
        ok &= passed
        results["checks"][name] = {"passed": passed, **numbers}
        print(f"{'ok  ' if passed else 'FAIL'} {name} {json.dumps(numbers)}", flush=True)

    # 1. pipeline in fp16, compiled UNet
    sdxl = ensure_tiny("sdxl")
    eager = load_pipeline(sdxl, dtype=dtype, device=device)
    compiled = load_pipeline(sdxl, dtype=dtype, device=device, compile_unet=True)
    for method in ("cfg", "answer"):
        images = np.stack(generate(compiled, PROMPTS, [0, 1], method=method, num_inference_steps=4, output_type="np").images)
        check(f"{method} images finite ({dtype}, compiled UNet)", bool(np.isfinite(images).all()),
              shape=list(images.shape))
    a = generate(eager, PROMPTS, [0, 1], method="cfg", num_inference_steps=4, output_type="latent").images
    b = generate(compiled, PROMPTS, [0, 1], method="cfg", num_inference_steps=4, output_type="latent").images
    as_float = lambda x: x.float().cpu() if torch.is_tensor(x) else torch.stack([t.float().cpu() for t in x])  # noqa
    diff = float((as_float(a) - as_float(b)).abs().max())
    scale = float(as_float(a).abs().max())
    # fused kernels round differently in 16-bit, and 4 steps carry it on: match within 10% of the latents' scale
    check("compiled UNet latents match eager", diff < 0.1 * scale, max_abs_diff=diff, latent_scale=scale)
    images = generate(eager, PROMPTS, [0, 1], method="cfg", num_inference_steps=4).images

    # 2. scorers: GPU fp16 against CPU float32
    cfg = load_config(REPO / "configs" / "tiny-scores.yaml")
    for name in cfg.score_names():
        settings = cfg.scorer_settings(name) if name != "clip" else None
        here = load_scorer(name, settings, device=device, dtype=dtype, clip=cfg.clip)
        ref = load_scorer(name, settings, device="cpu", dtype="float32", clip=cfg.clip)
        got, want = here.score(images, PROMPTS), ref.score(images, PROMPTS)
        gap = max(abs(g - w) for g, w in zip(got, want))
        check(f"scorer {name} on {device} {dtype} vs cpu float32", all(np.isfinite(got)) and gap < 0.05 * (
            1 + max(abs(w) for w in want)), scores=got, reference=want, max_abs_diff=gap)

    # 3. a job's stages in fp16 on the GPU
    job_cfg = load_config(REPO / "configs" / "tiny-scores.yaml", method="cfg", dtype=dtype, device=device)
    with tempfile.TemporaryDirectory() as out:
        summary = run(job_cfg, expand_samples([{"prompt": t} for t in PROMPTS], 2), out, run_local,
                      log=lambda msg: None)
        import pyarrow.parquet as pq

        records = [json.loads(r) for r in pq.read_table(f"{out}/index.parquet").column("record").to_pylist()]
    have = [sorted(r.get("scores", {})) for r in records]
    check("job in fp16: no failure, every score in every record",
          summary.failed == 0 and all(h == sorted(job_cfg.score_names()) for h in have),
          samples=summary.samples, failed=summary.failed, scores=have[0] if have else [])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
