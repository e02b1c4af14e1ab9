"""Measure prompt adherence of a toy-world model with the exact judge.

    python -m dnp_batch.toyworld.evaluate --model models/toy-shapes --n 100 --method cfg --w 6

Prompts are `data.prompts(n, prompt_seed)`, sample `i` uses seed `seed0 + i`; prints and returns
the judge's means per attribute (`relation` over the relational prompts only).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from ..api import AnswerConfig, generate
from ..models import load_pipeline
from .data import dataset, prompts
from .judge import JudgeCaptioner, judge, judge_many


def evaluate(pipe, n: int = 100, method: str = "cfg", guidance_scale: float = 6.0, steps: int = 25,
             prompt_seed: int = 1234, seed0: int = 0, batch_size: int = 16, **kwargs) -> dict:
    """Generate `n` samples (one prompt × seed each) with `method` and judge them."""
    texts = prompts(n, prompt_seed)
    seeds = [seed0 + i for i in range(n)]
    if method in ("auto-dnp", "cnp"):
        kwargs.setdefault("captioner", JudgeCaptioner())
    t0 = time.perf_counter()
    out = generate(pipe, texts, seeds, method, guidance_scale=guidance_scale, num_inference_steps=steps,
                   height=32, width=32, batch_size=batch_size, **kwargs)
    result = judge_many(out.images, texts)
    result.update(method=method, guidance_scale=guidance_scale, steps=steps, prompt_seed=prompt_seed,
                  seconds=round(time.perf_counter() - t0, 1))
    result["rows"] = [{"prompt": p, "seed": s, **judge(im, p)} for p, s, im in zip(texts, seeds, out.images)]
    result["images"] = out.images
    return result


def training_sanity(n: int = 100, seed: int = 1234) -> dict:
    """The judge on `n` generated training-distribution images against their own captions."""
    data = dataset(n, seed)
    return judge_many([im for im, _, _ in data], [c for _, c, _ in data])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dnp_batch.toyworld.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--method", default="cfg")
    parser.add_argument("--w", type=float, default=6.0)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--prompt-seed", type=int, default=1234)
    parser.add_argument("--grid", default=None, help="save the samples as a PNG grid here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pipe = load_pipeline(args.model)
    kwargs = {"answer": AnswerConfig()} if args.method == "answer" else {}
    res = evaluate(pipe, args.n, args.method, args.w, args.steps, args.prompt_seed, **kwargs)
    images = res.pop("images")
    rows = res.pop("rows")
    if args.grid:
        import numpy as np
        from PIL import Image

        cols = 10
        arrs = [np.asarray(im) for im in images] + [np.zeros_like(np.asarray(images[0]))] * (-len(images) % cols)
        grid = np.concatenate([np.concatenate(arrs[r * cols:(r + 1) * cols], 1) for r in range(len(arrs) // cols)], 0)
        Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(args.grid)
        with open(args.grid + ".json", "w") as f:
            json.dump(rows, f, indent=0)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
