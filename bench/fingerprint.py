"""A fingerprint of everything the package computes, to show a refactor changed no byte: every
method's latents, images and records on the tiny SD and SDXL models, every job's shard members,
a sweep's summary and comparison tables, its report's tables and the preference pairs.

    python bench/fingerprint.py --out /tmp/fp.json              # measure
    python bench/fingerprint.py --check bench/results/fingerprint.json   # compare: lists what changed

Each entry is a SHA-256 over the bytes of one output; records and tables are compared without
what legitimately varies from run to run (wall times, where a sample was made, absolute paths,
timestamps). Deterministic on one machine (float32 on the CPU, one process); another machine's
kernels may round differently, so compare fingerprints taken on the same machine.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
VOLATILE = {"seconds", "placement", "shard_digests", "model_path", "started", "finished", "elapsed_s", "created", "updated",
            "timings", "time", "timestamp"}


PLACES: dict[str, str] = {str(REPO): "<repo>"}  # absolute paths -> stable names (the temp dir is added in main)


def _volatile(key: str) -> bool:
    return key in VOLATILE or "seconds" in key or key.endswith(("_at", "_time", "_s"))


def _clean(value):
    if isinstance(value, dict):
        # diffusers fills a config's `_use_default_values` from a set: its order changes between processes
        return {k: sorted(v) if k == "_use_default_values" and isinstance(v, list) else _clean(v)
                for k, v in sorted(value.items()) if not _volatile(str(k))}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str):
        for place, name in PLACES.items():
            value = value.replace(place, name)
    return value


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_digest(value) -> str:
    return digest(json.dumps(_clean(value), sort_keys=True, default=str).encode())


def tensor_digest(x) -> str:
    import numpy as np
    import torch

    if torch.is_tensor(x):
        x = x.detach().cpu().contiguous().numpy()
    if isinstance(x, list):  # PIL images
        return digest(b"".join(np.asarray(im).tobytes() for im in x))
    return digest(np.ascontiguousarray(x).tobytes())


class FixedCaptioner:
    model_id, max_new_tokens, prompt = "fixed", None, None

    def caption(self, images):
        return ["a dark blurry room" if i % 2 == 0 else "" for i in range(len(images))]

    __call__ = caption


def library(fp: dict) -> None:
    from dnp_batch import AnswerSettings, generate, load_pipeline, methods
    from dnp_batch.models import set_scheduler
    from dnp_batch.tiny import ensure_tiny

    prompts, seeds, negatives = ["a red cube", "a green sphere under a lamp"], [3, 8], ["dark", ""]
    variants = {name: name for name in methods.REGISTRY}  # each method by name (its defaults), then settings
    variants.update({
        "answer-x0": AnswerSettings(negative_eps="x0", normalize="none"),
        "answer-uncond-channel": AnswerSettings(negative_eps="uncond", normalize="channel", shape="linear", k=3),
        "answer-lambda1": AnswerSettings(negative_scale=1.0),
    })
    for kind in ("sd", "sdxl"):
        pipe = load_pipeline(ensure_tiny(kind))
        for scheduler in ("ddim", "euler_a"):
            set_scheduler(pipe, scheduler)
            for name, method in variants.items():
                m, _ = methods.resolve(method)
                extra = {}
                if m.needs_negative:
                    extra["negative_prompts"] = negatives
                if m.needs_captioner:
                    extra["captioner"] = FixedCaptioner()
                for output_type in ("latent", "np"):
                    out = generate(pipe, prompts, seeds, method=method, num_inference_steps=4, height=64, width=64,
                                   output_type=output_type, **extra)
                    fp[f"library/{kind}/{scheduler}/{name}/{output_type}"] = tensor_digest(out.images)
                fp[f"library/{kind}/{scheduler}/{name}/records"] = json_digest(out.records)


def run_digests(fp: dict, prefix: str, out: Path) -> None:
    for path in sorted(out.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(out).as_posix()
        if path.suffix == ".tar":
            with tarfile.open(path) as tar:
                for member in tar.getmembers():
                    data = tar.extractfile(member).read()
                    fp[f"{prefix}/{rel}/{member.name}"] = (json_digest(json.loads(data)) if member.name.endswith(".json")
                                                           else digest(data))
        elif path.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
            for row in rows:
                if isinstance(row.get("record"), str):
                    row["record"] = json.loads(row["record"])
            fp[f"{prefix}/{rel}"] = json_digest(rows)
        elif path.suffix == ".csv":
            import pandas as pd

            table = pd.read_csv(path)
            table = table.drop(columns=[c for c in table.columns if c in VOLATILE or "seconds" in c])
            fp[f"{prefix}/{rel}"] = digest(table.to_csv(index=False).encode())
        elif path.suffix in (".json", ".jsonl"):
            text = path.read_text(encoding="utf-8")
            values = [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" \
                else json.loads(text)
            fp[f"{prefix}/{rel}"] = json_digest(values)


def _main_of(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem + "_job", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def jobs(fp: dict, tmp: Path) -> None:
    generate = _main_of(REPO / "jobs" / "generate.py")
    runs = {
        "toy-default": ["--prompts", "examples/prompts.jsonl"],
        "toy-auto-dnp": ["--prompts", "examples/prompts.jsonl", "--method", "auto-dnp"],
        "sd-cfg": ["--prompts", "examples/scenes.jsonl", "--config", "configs/tiny-sd.yaml", "--method", "cfg", "--seeds", "2"],
        "sdxl-answer": ["--prompts", "examples/scenes.jsonl", "--config", "configs/tiny-sdxl.yaml", "--samples-per-shard", "3"],
        "sd-dns": ["--prompts", "examples/scenes.jsonl", "--config", "configs/tiny-sd.yaml", "--method", "dns"],
        "scores": ["--prompts", "examples/scenes.jsonl", "--config", "configs/tiny-scores.yaml"],
    }
    for name, args in runs.items():
        out = tmp / name
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = generate([*args, "--out", str(out), "--distributor", "local"])
        assert code == 0, f"job {name} failed"
        run_digests(fp, f"job/{name}", out)
    sweep, report, pairs = (_main_of(REPO / "jobs" / f"{n}.py") for n in ("sweep", "report", "pairs"))
    out = tmp / "sweep"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert sweep(["--sweep", "configs/sweeps/tiny.yaml", "--prompts", "examples/prompts.jsonl", "--out", str(out),
                      "--distributor", "local"]) == 0
        assert report([str(out)]) == 0
        assert pairs(["--sweep", str(out), "--points", "cfg-w7,answer-k2", "--out", str(tmp / "pairs")]) == 0
    run_digests(fp, "sweep", out)
    run_digests(fp, "pairs", tmp / "pairs")
    for key in [k for k in fp if k.startswith("sweep/report/") and k.endswith((".png", ".html"))]:
        del fp[key]  # plots and HTML embed library versions and timestamps; their tables are fingerprinted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the fingerprint here (JSON)")
    parser.add_argument("--check", help="compare with this fingerprint; exit 1 listing what differs")
    parser.add_argument("--parts", default="library,jobs")
    args = parser.parse_args(argv)
    os.chdir(REPO)
    fp: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="dnp-fingerprint-") as tmp:
        PLACES[tmp] = "<tmp>"
        os.environ.setdefault("DNP_BATCH_CACHE", str(Path(tmp) / "cache"))
        if "library" in args.parts:
            library(fp)
        if "jobs" in args.parts:
            jobs(fp, Path(tmp))
    if args.out:
        Path(args.out).write_text(json.dumps(fp, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{len(fp)} outputs fingerprinted; digest of all: {json_digest(fp)[:16]}")
    if args.check:
        want = json.loads(Path(args.check).read_text(encoding="utf-8"))
        changed = sorted(k for k in set(want) | set(fp) if want.get(k) != fp.get(k))
        for key in changed:
            print(f"differs: {key}" + ("" if key in fp else " (missing now)") + ("" if key in want else " (new)"))
        print("unchanged" if not changed else f"{len(changed)} of {len(want)} outputs differ")
        return 1 if changed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
