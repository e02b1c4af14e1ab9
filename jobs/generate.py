"""Generate a dataset: prompts file + config -> one image and one JSON record per sample.

    python jobs/generate.py --prompts examples/prompts.jsonl --out out/

With no --config the job runs on built-in defaults: method `answer` on a tiny SDXL model that is
built on first use (no downloads). The job runs in-process.
"""

from __future__ import annotations

import argparse
import sys
import time

from dnp_batch.config import load_config
from dnp_batch.prompts import expand_samples, read_prompts
from dnp_batch.sink import DirSink
from dnp_batch.stages import GenerationStage, check_samples


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", required=True, help="JSONL ({'prompt': ..., 'id'?, 'negative_prompt'?, 'seed'?}) or TXT")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--config", help="YAML config (see configs/); default: built-in tiny-model defaults")
    p.add_argument("--method", choices=["cfg", "np", "dns", "dnp", "answer"], help="overrides the config's method")
    p.add_argument("--seeds", type=int, help="seeds 0..N-1 for every prompt without its own seed")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    try:
        cfg = load_config(args.config, method=args.method, seeds=args.seeds)
        samples = expand_samples(read_prompts(args.prompts), cfg.seeds)
        check_samples(cfg, samples)
        stage = GenerationStage(cfg)
        sink = DirSink(args.out)
        for start in range(0, len(samples), cfg.batch_size):
            for r in stage(samples[start:start + cfg.batch_size]):
                sink.write(r.sample.key, r.image, r.record)
            print(f"{min(start + cfg.batch_size, len(samples))}/{len(samples)} samples", file=sys.stderr)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    print(f"wrote {len(samples)} samples ({cfg.method}, {cfg.model}) to {args.out} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
