"""Measure prompt adherence of a toy-world model with the exact judge.

    python -m dnp_batch.toyworld.evaluate --model models/toy-shapes --n 100 --method cfg --w 6
    python -m dnp_batch.toyworld.evaluate --model models/toy-shapes --heldout

Prompts are `data.prompts(n, prompt_seed)`, sample `i` uses seed `seed0 + i`; prints and returns
the judge's means per attribute (`relation` over the relational prompts only).

`--heldout` gives a model's numbers the way the README reports them: CFG's `w` is chosen on the
validation prompts (`train.VALIDATION_PROMPT_SEED`, best all-correct over `W_GRID`), then measured
once on the held-out set (`HELDOUT_N` samples of `HELDOUT_PROMPT_SEED`, a seed neither training nor
validation uses, fixed before the model it reports on was trained), each attribute with its 95%
Wilson interval.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch

from .. import methods
from ..api import generate
from ..models import load_pipeline
from .data import dataset, prompts
from .judge import ATTRIBUTES, JudgeCaptioner, judge, judge_many

HELDOUT_PROMPT_SEED = 20261126
HELDOUT_N = 400
VALIDATION_N = 128
W_GRID = (1.5, 2.0, 3.0, 5.0, 7.5, 10.0)
HELDOUT_STEPS = 20


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def with_intervals(rows: list[dict]) -> dict:
    """Per attribute: mean, 95% Wilson interval and n over the rows where it applies."""
    out = {}
    for attr in ATTRIBUTES:
        values = [r[attr] for r in rows if not math.isnan(r[attr])]
        low, high = wilson(sum(values), len(values))
        out[attr] = {"mean": sum(values) / len(values) if values else math.nan, "low": low, "high": high,
                     "n": len(values)}
    return out


def evaluate(pipe, n: int = 100, method="cfg", guidance_scale: float = 6.0, steps: int = 25,
             prompt_seed: int = 1234, seed0: int = 0, batch_size: int = 16, **kwargs) -> dict:
    """Generate `n` samples (one prompt × seed each) with `method` (a name or its settings) and judge them."""
    texts = prompts(n, prompt_seed)
    seeds = [seed0 + i for i in range(n)]
    if methods.resolve(method)[0].needs_captioner:
        kwargs.setdefault("captioner", JudgeCaptioner())
    t0 = time.perf_counter()
    out = generate(pipe, texts, seeds, method=method, guidance_scale=guidance_scale, num_inference_steps=steps,
                   height=32, width=32, batch_size=batch_size, **kwargs)
    result = judge_many(out.images, texts)
    result.update(method=out.records[0]["method"], guidance_scale=guidance_scale, steps=steps, prompt_seed=prompt_seed,
                  seconds=round(time.perf_counter() - t0, 1))
    result["rows"] = [{"prompt": p, "seed": s, **judge(im, p)} for p, s, im in zip(texts, seeds, out.images)]
    result["images"] = out.images
    return result


def heldout(pipe, grid=W_GRID, steps: int = HELDOUT_STEPS, n: int = HELDOUT_N, validation_n: int = VALIDATION_N,
            quiet: bool = False) -> dict:
    """CFG's best `w` on the validation prompts, then the held-out numbers at that `w` (see the
    module docstring)."""
    from .train import VALIDATION_PROMPT_SEED

    validation = {}
    for w in grid:
        res = evaluate(pipe, validation_n, "cfg", w, steps, prompt_seed=VALIDATION_PROMPT_SEED)
        validation[w] = {k: res[k] for k in ATTRIBUTES}
        if not quiet:
            print(f"validation w={w}: " + ", ".join(f"{k} {res[k]:.3f}" for k in ATTRIBUTES), flush=True)
    best = max(grid, key=lambda w: (validation[w]["all"], -w))
    res = evaluate(pipe, n, "cfg", best, steps, prompt_seed=HELDOUT_PROMPT_SEED)
    return {"w": best, "steps": steps, "n": n, "prompt_seed": HELDOUT_PROMPT_SEED, "validation": validation,
            "heldout": with_intervals(res["rows"])}


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
    parser.add_argument("--heldout", action="store_true",
                        help="CFG's w chosen on validation prompts, then the held-out set with 95%% intervals")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pipe = load_pipeline(args.model)
    if args.heldout:
        res = heldout(pipe)
        print(f"held-out: {res['n']} samples (prompt seed {res['prompt_seed']}), CFG w={res['w']}, "
              f"{res['steps']} DDIM steps")
        for attr, r in res["heldout"].items():
            print(f"  {attr:<9} {r['mean']:.3f} [{r['low']:.3f}, {r['high']:.3f}]  n={r['n']}")
        print(json.dumps(res))
        return 0
    res = evaluate(pipe, args.n, args.method, args.w, args.steps, args.prompt_seed)
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
