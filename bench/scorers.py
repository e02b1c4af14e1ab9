"""What each scorer costs: seconds per image of `dnp_batch.scorers`, loaded once, batched as the
scoring stage batches.

    python bench/scorers.py [--images 16] [--size 64] [--device cpu] [--dtype float32]
                            [--model pickscore=yuvalkirstain/PickScore_v1 ...]

By default every scorer runs on its tiny random twin (`tiny-*`, built offline on first use), so the
numbers say what the code around the models costs (preprocessing, tokenising, batching), not what the
published models cost; pass `--model NAME=ID` (a hub id or local dir) for real weights on a GPU.
Random images of `--size`² px with the example prompts. Output lines: `load_seconds NAME VALUE`,
`seconds_per_image NAME VALUE` (the median of `--repeats` timed passes after one warm-up pass), and
one `config` line. Times are wall-clock on this machine, in this run only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dnp_batch import scorers  # noqa: E402
from dnp_batch.config import ClipSettings  # noqa: E402

PROMPTS = ["an astronaut riding a horse on the moon", "a watercolor painting of a city at night",
           "a red fox in the snow, photograph", "a teapot shaped like a pumpkin"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--scorers", default="clip,pickscore,hps,imagereward,aesthetic,judge")
    p.add_argument("--model", action="append", default=[], metavar="NAME=ID", help="real weights for a scorer")
    args = p.parse_args(argv)
    models = dict(m.split("=", 1) for m in args.model)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))
              for _ in range(args.images)]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.images)]
    torch.set_num_threads(1)
    print(f"config images={args.images} size={args.size} device={args.device} dtype={args.dtype} "
          f"torch_threads=1 repeats={args.repeats}")
    for name in args.scorers.split(","):
        model = models.get(name, f"tiny-{name}")
        settings = ClipSettings(model=model) if name == "clip" else None if name == "judge" else {"model": model}
        t0 = time.perf_counter()
        scorer = scorers.load_scorer(name, settings, device=args.device, dtype=args.dtype)
        print(f"load_seconds {name} {time.perf_counter() - t0:.3f}")
        scorer.score(images, prompts)  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            scorer.score(images, prompts)
            times.append((time.perf_counter() - t0) / len(images))
        print(f"seconds_per_image {name} {statistics.median(times):.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
