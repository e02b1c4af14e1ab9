"""Prompt adherence of every method in the toy shapes world, judged exactly.

    python bench/fidelity.py [--model models/toy-shapes] [--n 200] [--csv bench/fidelity.csv]

On a fixed prompt set from the toy grammar (`n` prompt × seed samples, sample i with seed i), each
method's samples are judged against their prompt (shape, colour, count, relation, all correct);
the table gives each attribute's mean with a 95% Wilson interval, and the measured NFE per image.
auto-DNP and CNP caption with the judge itself (an exact captioner in this world). Wall time is
printed too, but only ratios from one run mean anything.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import torch

from dnp_batch import AnswerConfig, generate, load_pipeline
from dnp_batch.toyworld.data import prompts
from dnp_batch.toyworld.evaluate import wilson
from dnp_batch.toyworld.judge import ATTRIBUTES, JudgeCaptioner, judge

REPO = Path(__file__).resolve().parents[1]
GENERIC_NEGATIVE = "a blurry noisy picture"

# (name, method, generate() keyword arguments)
METHODS = [
    ("cfg", "cfg", {}),
    ("np-generic", "np", {"negative_prompts": GENERIC_NEGATIVE}),
    ("dns", "dns", {}),
    ("auto-dnp", "auto-dnp", {"captioner": JudgeCaptioner()}),
    ("cnp-every5", "cnp", {"captioner": JudgeCaptioner(), "cnp_every": 5}),
    ("answer", "answer", {"answer": AnswerConfig()}),
    ("answer-k1", "answer", {"answer": AnswerConfig(k=1)}),
    ("answer-k3", "answer", {"answer": AnswerConfig(k=3)}),
    ("answer-until0.25", "answer", {"answer": AnswerConfig(until=0.25)}),
    ("answer-until1.0", "answer", {"answer": AnswerConfig(until=1.0)}),
]


def run_method(pipe, method, kwargs, texts, seeds, args) -> dict:
    kwargs = dict(kwargs)
    if "negative_prompts" in kwargs:
        kwargs["negative_prompts"] = [kwargs["negative_prompts"]] * len(texts)
    t0 = time.perf_counter()
    out = generate(pipe, texts, seeds, method, guidance_scale=args.w, num_inference_steps=args.steps,
                   batch_size=args.batch_size, **kwargs)
    seconds = time.perf_counter() - t0
    rows = [judge(image, text) for image, text in zip(out.images, texts)]
    result = {"nfe": out.records[0]["nfe"], "seconds_per_image": seconds / len(texts)}
    for attr in ATTRIBUTES:
        values = [r[attr] for r in rows if not math.isnan(r[attr])]
        low, high = wilson(sum(values), len(values))
        result[attr] = sum(values) / len(values) if values else math.nan
        result[f"{attr}_low"], result[f"{attr}_high"], result[f"{attr}_n"] = low, high, len(values)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "models" / "toy-shapes"))
    parser.add_argument("--n", type=int, default=200, help="prompt × seed samples per method")
    parser.add_argument("--w", type=float, default=7.0, help="guidance scale (METHODS.md default)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--methods", help="comma-separated subset of: " + ", ".join(m[0] for m in METHODS))
    parser.add_argument("--csv", default=str(REPO / "bench" / "fidelity.csv"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # fixed, so numbers do not depend on the machine's core count
    pipe = load_pipeline(args.model)
    texts, seeds = prompts(args.n), list(range(args.n))
    chosen = [m for m in METHODS if not args.methods or m[0] in args.methods.split(",")]
    results = []
    print(f"{args.n} samples per method, w={args.w}, {args.steps} steps, model {args.model}")
    print(f"{'method':<18} {'all':>18} {'shape':>6} {'colour':>6} {'count':>6} {'relation':>8} {'NFE':>5} {'s/img':>6}")
    for name, method, kwargs in chosen:
        r = {"method": name, **run_method(pipe, method, kwargs, texts, seeds, args)}
        results.append(r)
        print(f"{name:<18} {r['all']:.3f} [{r['all_low']:.3f},{r['all_high']:.3f}] {r['shape']:>6.3f} "
              f"{r['colour']:>6.3f} {r['count']:>6.3f} {r['relation']:>8.3f} {r['nfe']:>5} "
              f"{r['seconds_per_image']:>6.3f}", flush=True)
    with open(args.csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)
    print(f"written {args.csv}")


if __name__ == "__main__":
    main()
