"""Build preference pairs (DPO / ORPO) from two or more runs over the same prompts and seeds.

    python jobs/pairs.py --runs out-cfg/ out-answer/ --out pairs/ [--scorer clip] [--min-margin 0.0]
    python jobs/pairs.py --sweep sweep/ [--points cfg_w5,cfg_w7] --out s3://bucket/pairs

Writes WebDataset shards `pairs-*.tar` (the keys diffusers' ORPO/DPO WebDataset scripts read),
`pairs.parquet` (Pick-a-Pic v2's columns) and `pairs_manifest.json` into --out; see
`dnp_batch/pairs.py`. The labels come from the scorer registry (dnp_batch.scorers): `--scorer
clip` uses the CLIP scores the runs stored, `--scorer pickscore` (hps, imagereward, aesthetic,
judge) that stored score, `--scorer pickscore=1,hps=0.5` a weighted sum of stored scores; with
`--recompute` the scorer runs on the images again (clip with --clip-model / --clip-pretrained;
`tiny-clip`: the tiny random one).
"""

from __future__ import annotations

import argparse
import sys

from dnp_batch.cli import ArgumentParser
from dnp_batch.pairs import build_pairs, get_scorer, resolve_runs, write_pairs


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs", nargs="+", metavar="DIR", help="two or more run directories (jobs/generate.py --out)")
    src.add_argument("--sweep", metavar="DIR", help="a sweep directory (sweep.json + points/)")
    p.add_argument("--points", help="comma-separated sweep point names (default: all points)")
    p.add_argument("--out", required=True, help="output directory or fsspec URL (memory://, s3://, gs://)")
    p.add_argument("--scorer", default="clip",
                   help="a score the runs stored (clip, pickscore, hps, imagereward, aesthetic, judge: the names of "
                        "dnp_batch.scorers) or a weighted sum such as pickscore=1,hps=0.5; default: clip")
    p.add_argument("--recompute", action="store_true",
                   help="run the scorer on the runs' images instead of reading the stored scores")
    p.add_argument("--min-margin", type=float, default=0.0, help="skip pairs whose scores differ by less")
    p.add_argument("--samples-per-shard", type=int, default=1000, help="pairs per shard (default 1000)")
    p.add_argument("--clip-model", help="--scorer clip --recompute: open_clip name, local dir or tiny-clip")
    p.add_argument("--clip-pretrained", help="--scorer clip --recompute: open_clip pretrained tag")
    p.add_argument("--device", help="--recompute: torch device (default cpu)")
    args = p.parse_args(argv)
    if args.points is not None and not args.sweep:
        p.error("--points needs --sweep")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        settings = {k: v for k, v in (("model", args.clip_model), ("pretrained", args.clip_pretrained),
                                      ("device", args.device)) if v is not None}
        if settings and not args.recompute:
            raise ValueError("--clip-model, --clip-pretrained and --device are for a scorer run with --recompute")
        if {"model", "pretrained"} & set(settings) and args.scorer != "clip":
            raise ValueError(f"--clip-model and --clip-pretrained are for --scorer clip, not {args.scorer}")
        scorer = get_scorer(args.scorer, recompute=args.recompute, **settings)
        runs = resolve_runs(args.sweep, args.points) if args.sweep else resolve_runs(args.runs)
        pairs = build_pairs(runs, scorer, min_margin=args.min_margin)
        manifest = write_pairs(pairs, args.out, samples_per_shard=args.samples_per_shard)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    c = manifest["counts"]
    print(f"pairs: {c['pairs']} pairs ({c['ties']} ties, {c['skipped_by_margin']} skipped by margin, "
          f"{c['skipped_not_ok']} not ok) from runs {', '.join(n for n, _ in runs)} by {args.scorer} "
          f"in {c['shards']} shards -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
