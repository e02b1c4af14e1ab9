"""Generate a dataset: prompts file + config -> one image and one JSON record per sample.

    python jobs/generate.py --prompts examples/prompts.jsonl --out out/

With no --config the job runs on built-in defaults: method `answer` on a tiny SDXL model, with a
tiny BLIP-2 captioner (auto-dnp, cnp) and a tiny CLIP scorer, all built on first use (no
downloads). Human DNP runs in two phases: `--method dns` writes the DNS images and
OUT/negatives.jsonl; edit its negative prompts, then rerun with `--negatives OUT/negatives.jsonl`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from dnp_batch.api import METHODS
from dnp_batch.config import load_config
from dnp_batch.prompts import expand_samples, read_negatives, read_prompts
from dnp_batch.sink import DirSink
from dnp_batch.stages import GenerationStage, ScoringStage, check_samples


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", required=True, help="JSONL ({'prompt': ..., 'id'?, 'negative_prompt'?, 'seed'?}) or TXT")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--config", help="YAML config (see configs/); default: built-in tiny-model defaults")
    p.add_argument("--method", choices=METHODS, help="overrides the config's method")
    p.add_argument("--seeds", type=int, help="seeds 0..N-1 for every prompt without its own seed")
    p.add_argument("--negatives", help="human DNP phase two: the edited negatives.jsonl of a `--method dns` run")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    try:
        method = args.method or ("dnp" if args.negatives else None)
        cfg = load_config(args.config, method=method, seeds=args.seeds)
        if args.negatives and cfg.method != "dnp":
            raise ValueError(f"--negatives is for method dnp (human DNP phase two), not {cfg.method!r}")
        samples = expand_samples(read_prompts(args.prompts), cfg.seeds)
        if args.negatives:
            samples = read_negatives(args.negatives, samples)
        check_samples(cfg, samples)
        stage = GenerationStage(cfg)
        score = ScoringStage(cfg) if cfg.clip.model else None
        sink = DirSink(args.out)
        scores = []
        for start in range(0, len(samples), cfg.batch_size):
            results = stage(samples[start:start + cfg.batch_size])
            if score is not None:
                score(results)
            for r in results:
                sink.write(r.sample.key, r.image, r.record, r.dns_image)
                scores.append(r.record.get("clip_score"))
            print(f"{min(start + cfg.batch_size, len(samples))}/{len(samples)} samples", file=sys.stderr)
        if cfg.method == "dns":
            path = sink.write_jsonl("negatives.jsonl", [
                {"id": s.key, "prompt": s.prompt, "negative_prompt": ""} for s in samples])
            print(f"human DNP phase one: write a negative prompt for each DNS image in {path}, then rerun "
                  f"with --negatives {path}")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    clip = f", mean CLIP score {statistics.fmean(scores):.2f}" if score is not None else ""
    print(f"wrote {len(samples)} samples ({cfg.method}, {cfg.model}) to {args.out} in {seconds:.1f} s{clip}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
