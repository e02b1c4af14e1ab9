"""Measured NFE per method and ANSWER's wall-time cost relative to CFG, on the tiny SDXL model.

    python bench/nfe.py [--model DIR | --family sdxl|sd3|qwenimage] [--repeats 3]

`--family` picks that family's tiny twin (SD3.5, Qwen-Image: the flow-matching transformers).
NFE is counted by a hook on the network (rows per forward pass), not computed from the formula.
Wall times are medians over repeats, measured in this run; only their ratio is meaningful.
"""

from __future__ import annotations

import argparse
import statistics
import time

from dnp_batch import families, generate, load_pipeline, methods
from dnp_batch.tiny import ensure_tiny

# every method that runs without a captioner, with its default settings
METHODS = tuple(name for name, m in methods.REGISTRY.items() if not m.needs_captioner)
STEPS = (10, 30, 50)
SIZE = 64  # the tiny twins' size (Qwen-Image's pipeline would default to 1024²)


def measure(pipe, method: str, steps: int, repeats: int) -> tuple[int, float]:
    rows: list[int] = []
    hook = families.network(pipe).register_forward_pre_hook(  # the UNet's sample, a transformer's hidden_states
        lambda module, args, kwargs: rows.append((args[0] if args else kwargs["hidden_states"]).shape[0]),
        with_kwargs=True)
    negatives = ["blurry, low quality"] if methods.get(method).needs_negative else None
    times = []
    try:
        for _ in range(repeats):
            rows.clear()
            t0 = time.perf_counter()
            generate(pipe, ["a red fox in the snow"], [0], method=method, negative_prompts=negatives,
                     num_inference_steps=steps, height=SIZE, width=SIZE, output_type="latent")
            times.append(time.perf_counter() - t0)
    finally:
        hook.remove()
    return sum(rows), statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="diffusers pipeline dir or hub id (default: the tiny twin of --family)")
    parser.add_argument("--family", default="sdxl", choices=["sdxl", "sd3", "qwenimage"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", default=",".join(map(str, STEPS)), help="comma-separated step counts T")
    args = parser.parse_args(argv)
    pipe = load_pipeline(args.model or ensure_tiny(args.family))
    generate(pipe, ["warm-up"], [0], method="cfg", num_inference_steps=2, height=SIZE, width=SIZE, output_type="latent")

    print(f"{'T':>3} {'method':<7} {'NFE':>5} {'formula':>7} {'NFE/CFG':>8} {'time/CFG':>9}")
    for steps in (int(t) for t in args.steps.split(",")):
        results = {m: measure(pipe, m, steps, args.repeats) for m in METHODS}
        cfg_nfe, cfg_time = results["cfg"]
        for m, (nfe, seconds) in results.items():
            print(f"{steps:>3} {m:<7} {nfe:>5} {methods.get(m).nfe(steps):>7} {nfe / cfg_nfe:>8.2f} "
                  f"{seconds / cfg_time:>9.2f}")


if __name__ == "__main__":
    main()
