"""Pilot runs for the toy model's design: several training recipes side by side, each for a few
minutes on a GPU (or a few steps on the CPU), printing the judge's validation curve of each.

    python bench/toy_pilot.py --out /tmp/pilot --device cuda --minutes 5

The committed model is trained on the CPU (`python -m dnp_batch.toyworld.train`, deterministic);
these runs only choose its recipe: GPU steps are not bit-identical to CPU steps, but the curve of
adherence against steps is what a recipe does, whichever device runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

RECIPES = {
    "v1-r50": ["--arch", "v1", "--relation-share", "0.5"],
    "v1-r80": ["--arch", "v1", "--relation-share", "0.8"],
    "v1-r80-lr5e-4": ["--arch", "v1", "--relation-share", "0.8", "--lr", "5e-4"],
    "v1-r80-b64": ["--arch", "v1", "--relation-share", "0.8", "--batch-size", "64"],
    "v2-r80": ["--arch", "v2", "--relation-share", "0.8"],
    "v2-narrow-r80": ["--arch", "v2-narrow", "--relation-share", "0.8"],
    "v2-text4-r80": ["--arch", "v2-text4", "--relation-share", "0.8"],
    "v2-r80-b64": ["--arch", "v2", "--relation-share", "0.8", "--batch-size", "64"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=40000)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--eval-n", type=int, default=128)
    parser.add_argument("--recipes", default=",".join(RECIPES))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    procs = {}
    for name in args.recipes.split(","):
        cmd = [sys.executable, "-m", "dnp_batch.toyworld.train", "--out", str(out / name), "--seed", "0",
               "--steps", str(args.steps), "--minutes", str(args.minutes), "--save-every", "0",
               "--device", args.device, "--eval-every", str(args.eval_every), "--eval-n", str(args.eval_n),
               *RECIPES[name]]
        procs[name] = subprocess.Popen(cmd, env=env, stdout=open(out / f"{name}.out", "w"), stderr=subprocess.STDOUT)
    summary = {}
    for name, proc in procs.items():
        proc.wait()
        log_path = out / name / "train_log.json"
        if not log_path.is_file():
            print(f"{name}: failed (exit {proc.returncode}); see {out / name}.out")
            continue
        log = json.loads(log_path.read_text())
        summary[name] = {"steps_done": log["steps_done"], "params": log["params"], "evals": log["evals"],
                         "final_loss": log.get("final_loss")}
        print(f"\n{name}: {log['steps_done']} steps, unet {log['params']['unet']:,} params, "
              f"loss {log.get('final_loss', float('nan')):.4f}")
        print("  step   shape colour count relation  all")
        for e in log["evals"]:
            print(f"  {e['step']:6d}  {e['shape']:.2f}  {e['colour']:.2f}  {e['count']:.2f}  {e['relation']:.2f}     "
                  f"{e['all']:.2f}")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
