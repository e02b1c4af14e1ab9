"""Generate a scored WebDataset: prompts file + config -> shards of images with JSON records.

    python jobs/generate.py --prompts examples/prompts.jsonl --out out/
    ray job submit -- python jobs/generate.py --prompts parti.tsv --config configs/sdxl-answer.yaml --out s3://bucket/run

Runs on Ray Data: the cluster named by RAY_ADDRESS (or the job's own, under `ray job submit`),
else a private local Ray instance. With no --config it runs on built-in defaults: the committed
toy-shapes model with the settings its study chose (ANSWER, λ = 1, w = 3, 20 steps), the toy
world's exact judge as captioner (auto-dnp, cnp) and scorer, and a tiny CLIP built on first use
(no downloads). A rerun into the same --out resumes: it generates only the
shards not yet written. Human DNP: `--method dns` writes the DNS images and OUT/negatives.jsonl;
fill in its negative prompts, then rerun with `--negatives FILE` into another --out.
"""

from __future__ import annotations

import argparse
import json
import sys

from dnp_batch import methods
from dnp_batch.cli import ArgumentParser
from dnp_batch.config import load_config
from dnp_batch.prompts import PromptSet, expand_samples, folded_note, parse_seeds, read_negatives, read_prompts

# torch, diffusers and Ray load in main(), once the arguments, the config and the prompts are read:
# --help and every error that needs no model answer at once (bench/cli_latency.py measures it).


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", required=True, help="JSONL, TXT, CSV/TSV (PartiPrompts, DrawBench) or Parquet")
    p.add_argument("--out", required=True, help="output directory or fsspec URL (memory://, s3://, gs://)")
    p.add_argument("--config", help="YAML config (see configs/); default: built-in tiny-model defaults")
    p.add_argument("--method", choices=methods.METHODS, help="overrides the config's method")
    p.add_argument("--seeds", type=parse_seeds, help="a count N (seeds 0..N-1) or a list like 0,5,9")
    p.add_argument("--samples-per-shard", type=int, help="overrides output.samples_per_shard")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set answer.k=3 (repeatable)")
    p.add_argument("--negatives", help="human DNP phase two: the edited negatives.jsonl of a `--method dns` run")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="require a run in --out to resume")
    mode.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--distributor", choices=["ray", "local"], default="ray",
                   help="ray (default): Ray Data actor pools; local: every stage in this process")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        human_dnp = next(m.name for m in methods.REGISTRY.values() if m.reads_negatives_file)
        method = args.method or (human_dnp if args.negatives else None)
        output = {"samples_per_shard": args.samples_per_shard} if args.samples_per_shard else None
        cfg = load_config(args.config, sets=args.set, method=method, seeds=args.seeds, output=output)
        if args.negatives and cfg.method != human_dnp:
            raise ValueError(f"--negatives is for method {human_dnp} (human DNP phase two), not {cfg.method!r}")
        if args.negatives:  # human DNP phase two: a person wrote every negative; held in memory
            samples = expand_samples(read_prompts(args.prompts), cfg.seeds, args.prompts)
        else:  # streamed: the driver keeps an index of the file, the workers read their shards
            samples = PromptSet(args.prompts, cfg.seeds)
        if note := folded_note(samples):
            print(note, file=sys.stderr)
        if args.negatives:
            samples = read_negatives(args.negatives, samples)
        from dnp_batch.job import run, run_local

        if args.distributor == "ray":
            from dnp_batch.dag import run_ray as distributor
        else:
            distributor = run_local
        summary = run(cfg, samples, args.out, distributor, resume=args.resume, overwrite=args.overwrite)
        if methods.get(cfg.method).writes_negatives_file:
            from dnp_batch.sink import ShardSink

            rows = [{"id": s.key, "prompt": s.prompt, "negative_prompt": ""} for s in samples]
            ShardSink(args.out).put("negatives.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
            print(f"human DNP phase one: write a negative prompt for each DNS image into "
                  f"{args.out.rstrip('/')}/negatives.jsonl, then rerun with --negatives", file=sys.stderr)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the output failed mid-run (full disk, lost bucket): finished shards are kept
        print(f"error: writing to --out {args.out} failed: {e}; fix the storage and rerun the same command "
              "(it resumes)", file=sys.stderr)
        return 1
    print(f"{cfg.method}: {summary.line(cfg.method)} -> {args.out}")
    print(summary.time_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
