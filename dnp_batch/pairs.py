"""Preference pairs (DPO / ORPO) from two or more runs over the same prompts and seeds.

    runs = resolve_runs(["out-cfg", "out-answer"])          # or resolve_runs("sweep-dir", ["a", "b"])
    pairs = build_pairs(runs, "clip", min_margin=0.5)
    write_pairs(pairs, "s3://bucket/pairs")

For every sample key and every two runs (i < j, in the given order) the scorer's higher image gets
label 1 and the other 0; equal scores are a tie (0.5 / 0.5); a pair whose scores differ by less
than `min_margin` is skipped. Only samples with status ok in both runs make pairs.

Layout of OUT (any fsspec URL):
    pairs-00000.tar ...   per pair `KEY-i-j`: original_prompt.txt, jpg_0.jpg, jpg_1.jpg,
                          label_0.txt, label_1.txt (the keys diffusers'
                          train_diffusion_orpo_sdxl_lora_wds.py reads) and json (scores, models, seed);
                          the preferred image is jpg_0 (label_0 1; a tie keeps the runs' order), as
                          that reader compares the decoded label *string* with 0
    pairs.parquet         Pick-a-Pic v2's columns (caption, jpg_0, jpg_1, label_0, label_1, model_0,
                          model_1, image_0_uid, image_1_uid, best_image_uid, are_different,
                          has_label, ranking_id, num_example_per_prompt) + score_0, score_1, seed,
                          key (the pair key); an image's uid is `RUN/KEY`
    pairs_manifest.json   inputs and counts (pairs, ties, skipped by margin)

The labels come from the one scorer registry, `dnp_batch.scorers`: by default the score each run
stored for a registry name (`clip`, `pickscore`, `hps`, `imagereward`, `aesthetic`, `judge`, read
from each record's `scores` mapping), or a weighted sum of several (`"pickscore=1,hps=0.5"`); with
`recompute`, one registry scorer run on the images (a scorer a plug-in adds included). An object
with a `name` and the registry's `score(images, prompts) -> list[float]` (one float per image,
higher is better) may also be passed as is.
"""

from __future__ import annotations

import io
import json
import math
import posixpath
import tarfile
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import partial

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from .fileio import TMP, WholeFiles, resolve
from .runs import IMAGE_EXTS, SWEEP, Run, basename, is_sweep, sweep_points
from .sink import encode_image, record_json

PAIRS_PARQUET = "pairs.parquet"
PAIRS_MANIFEST = "pairs_manifest.json"
JPEG_QUALITY = 95
TIE_EPS = 1e-9
SCORE_CHUNK = 128

PAIRS_SCHEMA = pa.schema([
    ("caption", pa.string()), ("jpg_0", pa.binary()), ("jpg_1", pa.binary()),
    ("label_0", pa.float64()), ("label_1", pa.float64()), ("model_0", pa.string()), ("model_1", pa.string()),
    ("image_0_uid", pa.string()), ("image_1_uid", pa.string()), ("best_image_uid", pa.string()),
    ("are_different", pa.bool_()), ("has_label", pa.bool_()), ("ranking_id", pa.int64()),
    ("num_example_per_prompt", pa.int64()),
    ("score_0", pa.float64()), ("score_1", pa.float64()), ("seed", pa.int64()), ("key", pa.string()),
])

class MissingScore(ValueError):
    """A record lacks the score a scorer reads; `build_pairs` names the run."""

    def __init__(self, key: str, field: str, hint: str):
        super().__init__(f"no {field} for {key}; {hint}")
        self.key, self.field, self.hint = key, field, hint


class StoredScores:
    """A weighted sum of the scores each run stored in its records, one per name of the scorer
    registry (dnp_batch.scorers; the scoring stage's `scores` mapping, and `clip_score` for clip):
    no model is loaded. `"pickscore"` alone is weight 1."""

    def __init__(self, weights: dict[str, float]):
        self.weights = dict(weights)
        self.name = ",".join(n if w == 1 and len(weights) == 1 else f"{n}={w:g}" for n, w in self.weights.items())
        # the runs' own CLIP score alone: its model is in every record (clip_model), nothing to add
        self.settings = None if self.weights == {"clip": 1.0} else {"weights": self.weights, "stored": True}

    def score_records(self, records: list[dict]) -> list[float]:
        out = []
        for record in records:
            stored = record.get("scores") or {}
            total = 0.0
            for name, weight in self.weights.items():
                value = record.get("clip_score") if name == "clip" else None
                if value is None:
                    value = (stored.get(name) or {}).get("score")
                if value is None:
                    if name == "clip":
                        raise MissingScore(record.get("id"), "clip_score", "generate with a clip model configured")
                    raise MissingScore(record.get("id"), f"{name} score",
                                       f"generate with scores: [..., {name}] in the job config")
                total += weight * float(value)
            out.append(total)
        return out


def recomputed(name: str, device: str = "cpu", **settings):
    """Scorer `name` of the registry (dnp_batch.scorers), loaded to run on every run's images
    (`--recompute`), with its settings (clip: `model`, `pretrained`, default open_clip ViT-H-14
    laion2b_s32b_b79k; the others: their settings section's keys); named `NAME-recompute`."""
    from . import scorers

    spec = scorers.get(name)  # unknown -> the one-line error naming the known scorers
    if name == "clip":
        from .config import ClipSettings
        from .scoring import DEFAULT_CLIP_MODEL, DEFAULT_CLIP_PRETRAINED

        if settings.get("model") is None:
            settings = {**settings, "model": DEFAULT_CLIP_MODEL,
                        "pretrained": settings.get("pretrained") or DEFAULT_CLIP_PRETRAINED}
        scorer = scorers.load_scorer(name, ClipSettings(**settings), device=device)
        scorer.settings = {"model": settings["model"], "pretrained": settings.get("pretrained")}
    else:
        if spec.settings is None and settings:
            raise ValueError(f"scorer {name!r} takes no settings, got {sorted(settings)}")
        scorer = scorers.load_scorer(name, settings or None, device=device)
        scorer.settings = {**settings, "recomputed": True}
    scorer.name = f"{name}-recompute"
    return scorer


def parse_weights(text: str) -> dict[str, float]:
    """`"pickscore"` -> {pickscore: 1}; `"pickscore=1,hps=0.5"` -> {pickscore: 1, hps: 0.5}; names from
    dnp_batch.scorers."""
    from . import scorers

    weights: dict[str, float] = {}
    for part in [p.strip() for p in text.split(",")]:
        name, sep, value = part.partition("=")
        name = name.strip()
        if name not in scorers.registry():
            known = ", ".join(scorers.names())
            raise ValueError(f"unknown scorer {name!r} in --scorer {text!r}; known: {known}, or a weighted sum "
                             f"such as pickscore=1,hps=0.5")
        try:
            weight = float(value) if sep else 1.0
        except ValueError:
            raise ValueError(f"--scorer {text!r}: the weight of {name} must be a number, got {value!r}") from None
        if not math.isfinite(weight) or name in weights:
            raise ValueError(f"--scorer {text!r}: name each scorer once with a finite weight")
        weights[name] = weight
    return weights


def get_scorer(scorer, recompute: bool = False, **settings):
    """A labeller: a stored score's name or weighted sum (`"clip"`, `"pickscore"`,
    `"pickscore=1,hps=0.5"`: names of dnp_batch.scorers); with `recompute`, that one scorer of the
    registry run on the images, with its settings; or an instance as is (a `score(images, prompts)`
    method as the registry's scorers have, or `score_records(records)`)."""
    if not isinstance(scorer, str):
        if settings or recompute:
            raise ValueError("scorer settings and recompute are for a scorer given by name, not an instance")
        return scorer
    weights = parse_weights(scorer)
    if recompute:
        if len(weights) != 1 or next(iter(weights.values())) != 1:
            raise ValueError(f"--recompute runs one scorer, not the weighted sum {scorer!r}")
        return recomputed(next(iter(weights)), **settings)
    if settings:
        raise ValueError(f"scorer {scorer!r} reads stored scores and takes no settings {sorted(settings)}; "
                         f"add --recompute to run it on the images")
    return StoredScores(weights)


@dataclass
class Pair:
    """Two images of one sample key from runs `i` < `j`, with the scorer's labels."""

    key: str
    prompt: str
    seed: int
    model_0: str
    model_1: str
    jpg_0: bytes = field(repr=False)
    jpg_1: bytes = field(repr=False)
    label_0: float
    label_1: float
    score_0: float
    score_1: float
    i: int = 0
    j: int = 1

    @property
    def pair_key(self) -> str:
        return f"{self.key}-{self.i}-{self.j}"

    @property
    def is_tie(self) -> bool:
        return self.label_0 == self.label_1

    def preferred_first(self) -> "Pair":
        """This pair with the preferred image as image 0 (a tie keeps the runs' order; the key stays)."""
        if self.label_0 >= self.label_1:
            return self
        return replace(self, model_0=self.model_1, model_1=self.model_0, jpg_0=self.jpg_1, jpg_1=self.jpg_0,
                       label_0=self.label_1, label_1=self.label_0, score_0=self.score_1, score_1=self.score_0)


class Pairs(list):
    """The pairs `build_pairs` made, with what made them (runs, scorer, margin) and what it skipped."""

    def __init__(self, pairs=(), runs=(), scorer: str = "", scorer_settings: dict | None = None,
                 min_margin: float = 0.0, skipped_by_margin: int = 0, skipped_not_ok: int = 0, keys: int = 0):
        super().__init__(pairs)
        self.runs = [list(r) for r in runs]
        self.scorer, self.scorer_settings, self.min_margin = scorer, scorer_settings or {}, min_margin
        self.skipped_by_margin, self.skipped_not_ok, self.keys = skipped_by_margin, skipped_not_ok, keys


def _sweep_dirs(sweep: str) -> dict[str, str]:
    """{point name: run directory} of a sweep, in sweep order."""
    if not is_sweep(sweep):
        raise ValueError(f"{sweep} is not a sweep directory (no {SWEEP}); pass run directories instead")
    return {name: run_dir for name, run_dir, _ in sweep_points(sweep)}


def resolve_runs(paths_or_sweep, points=None) -> list[tuple[str, str]]:
    """[(name, dir)] from run directories (names: their basenames, made unique) or from one sweep
    directory (names: its point names; `points` picks some, default all, in sweep order)."""
    single = isinstance(paths_or_sweep, str) or hasattr(paths_or_sweep, "__fspath__")
    paths = [str(paths_or_sweep)] if single else [str(p) for p in paths_or_sweep]
    if isinstance(points, str):
        points = [p for p in points.split(",") if p]
    if len(paths) == 1 and (single or points is not None or is_sweep(paths[0])):
        available = _sweep_dirs(paths[0])
        chosen = list(available) if points is None else list(points)
        unknown = [p for p in chosen if p not in available]
        if unknown:
            raise ValueError(f"sweep {paths[0]} has no point(s) {', '.join(unknown)}; "
                             f"its points: {', '.join(available)}")
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"points {chosen} name a point twice; name each once")
        return [(name, available[name]) for name in chosen]
    if points is not None:
        raise ValueError("points are for a single sweep directory, not a list of run directories")
    runs, used = [], set()
    for path in paths:
        base = name = basename(path)
        n = 1
        while name in used:
            n += 1
            name = f"{base}-{n}"
        used.add(name)
        runs.append((name, path))
    return runs


def _ok_images(run: Run, table: dict[str, dict]) -> dict[str, bytes]:
    """{key: image bytes} of the run's ok samples, read from its shards."""
    wanted = [k for k, r in table.items() if r["status"] == "ok"]
    images = run.read_many(wanted, IMAGE_EXTS)
    missing = sorted(set(wanted) - set(images))
    if missing:
        raise ValueError(f"{run.label}: the index lists {missing[0]} as ok but its shard has "
                         f"no image for it; rerun jobs/generate.py with --resume into that directory")
    return images


def _check_same_samples(names: list[str], tables: list[dict[str, dict]]) -> None:
    base = tables[0]
    for name, table in zip(names[1:], tables[1:]):
        differ = sorted(set(base) ^ set(table))
        if differ:
            key = differ[0]
            where = names[0] if key in base else name
            detail = f"{key!r} is only in run {where}"
        else:
            detail = None
            for key in base:
                a, b = base[key], table[key]
                if a["prompt"] != b["prompt"]:
                    detail = f"{key!r} has prompt {a['prompt']!r} vs {b['prompt']!r}"
                elif a["seed"] != b["seed"]:
                    detail = f"{key!r} has seed {a['seed']} vs {b['seed']}"
                if detail:
                    break
        if detail:
            raise ValueError(f"pairs need runs over the same prompts and seeds: runs {names[0]} and "
                             f"{name} differ, e.g. key {detail}")


def _open_image(data: bytes, run: str, key: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"run {run}: the image of {key} does not decode: {e}") from None
    return image


def _score_run(scorer, name: str, keys: list[str], table: dict, images: list) -> list[float]:
    prompts = [table[k]["prompt"] for k in keys]
    records = [dict(table[k]["record"], id=k) for k in keys]
    try:
        scores = scorer.score_records(records) if hasattr(scorer, "score_records") else scorer.score(images, prompts)
    except MissingScore as e:
        raise ValueError(f"run {name} has no {e.field} for {e.key}; {e.hint}") from None
    scores = list(scores)
    if len(scores) != len(keys):
        raise ValueError(f"scorer {scorer.name!r} returned {len(scores)} scores for {len(keys)} images "
                         f"of run {name}; it must return one per image")
    for key, s in zip(keys, scores):
        if not isinstance(s, (int, float)) or not math.isfinite(s):
            raise ValueError(f"scorer {scorer.name!r} gave run {name} key {key} the score {s!r}; "
                             f"scores must be finite numbers")
    return [float(s) for s in scores]


def build_pairs(runs, scorer, min_margin: float = 0.0) -> Pairs:
    """Pairs over every key and every two runs (i < j) of `runs` ([(name, dir)], see `resolve_runs`),
    scored by `scorer` (see `get_scorer`); see the module docstring for the labels."""
    runs = [(str(n), str(d)) for n, d in runs]
    if len(runs) < 2:
        raise ValueError(f"pairs need at least two runs, got {len(runs)}; pass two or more run "
                         f"directories or a sweep with two or more points")
    names = [n for n, _ in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique, got {names}")
    if (isinstance(min_margin, bool) or not isinstance(min_margin, (int, float)) or not math.isfinite(min_margin)
            or min_margin < 0):
        raise ValueError(f"min_margin must be a number >= 0, got {min_margin!r}")
    scorer = get_scorer(scorer)
    if not isinstance(getattr(scorer, "name", None), str) or not (
            callable(getattr(scorer, "score", None)) or callable(getattr(scorer, "score_records", None))):
        raise ValueError(f"scorer {scorer!r} needs a `name` and a `score(images, prompts)` method")
    readers = [Run(d, n) for n, d in runs]
    tables = [r.rows() for r in readers]
    _check_same_samples(names, tables)
    order = list(tables[0])
    jpegs, scores = [], []
    for (name, _), reader, table in zip(runs, readers, tables):
        raw = _ok_images(reader, table)
        keys = [k for k in order if k in raw]
        jpeg, run_scores = {}, {}
        for start in range(0, len(keys), SCORE_CHUNK):  # bounds the decoded images held at once
            chunk = keys[start:start + SCORE_CHUNK]
            images = [_open_image(raw[k], name, k) for k in chunk]
            for key, image in zip(chunk, images):
                jpeg[key] = raw[key] if image.format == "JPEG" else encode_image(image, "jpg", JPEG_QUALITY)
            run_scores.update(zip(chunk, _score_run(scorer, name, chunk, table, images)))
        jpegs.append(jpeg)
        scores.append(run_scores)
    pairs, skipped_margin, skipped_not_ok = [], 0, 0
    for key in order:
        row = tables[0][key]
        for i in range(len(runs)):
            for j in range(i + 1, len(runs)):
                if key not in scores[i] or key not in scores[j]:
                    skipped_not_ok += 1
                    continue
                s0, s1 = scores[i][key], scores[j][key]
                if abs(s0 - s1) < min_margin:
                    skipped_margin += 1
                    continue
                if abs(s0 - s1) <= TIE_EPS:
                    labels = (0.5, 0.5)
                else:
                    labels = (1.0, 0.0) if s0 > s1 else (0.0, 1.0)
                pairs.append(Pair(key=key, prompt=row["prompt"], seed=int(row["seed"]), model_0=names[i],
                                  model_1=names[j], jpg_0=jpegs[i][key], jpg_1=jpegs[j][key],
                                  label_0=labels[0], label_1=labels[1], score_0=s0, score_1=s1, i=i, j=j))
    return Pairs(pairs, runs=runs, scorer=scorer.name, scorer_settings=getattr(scorer, "settings", None),
                 min_margin=float(min_margin), skipped_by_margin=skipped_margin, skipped_not_ok=skipped_not_ok,
                 keys=len(order))


def label_text(label: float) -> str:
    """1.0 -> "1", 0.0 -> "0", 0.5 -> "0.5"."""
    return f"{label:g}"


def _uid(model: str, key: str) -> str:
    return f"{model}/{key}"


def _pair_json(pair: Pair, scorer: str) -> bytes:
    return record_json({
        "key": pair.key, "pair_key": pair.pair_key, "prompt": pair.prompt, "seed": pair.seed,
        "model_0": pair.model_0, "model_1": pair.model_1, "score_0": pair.score_0, "score_1": pair.score_1,
        "label_0": pair.label_0, "label_1": pair.label_1, "scorer": scorer,
    }).encode()


def _write_tar(f, pairs: list[Pair], scorer: str) -> None:
    """The WebDataset shards put the preferred image first: diffusion_orpo's reader decodes
    label_0.txt as a string and takes jpg_0 as the chosen image unless `label_0 == 0`, which a string
    never equals."""
    with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for pair in map(Pair.preferred_first, pairs):
            members = [("original_prompt.txt", pair.prompt.encode()), ("jpg_0.jpg", pair.jpg_0),
                       ("jpg_1.jpg", pair.jpg_1), ("label_0.txt", label_text(pair.label_0).encode()),
                       ("label_1.txt", label_text(pair.label_1).encode()), ("json", _pair_json(pair, scorer))]
            for ext, data in members:
                info = tarfile.TarInfo(f"{pair.pair_key}.{ext}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))


def _parquet_rows(pairs: list[Pair], start: int, per_prompt: Counter) -> list[dict]:
    rows = []
    for n, pair in enumerate(pairs, start):
        uid_0, uid_1 = _uid(pair.model_0, pair.key), _uid(pair.model_1, pair.key)
        best = "" if pair.is_tie else (uid_0 if pair.label_0 > pair.label_1 else uid_1)
        rows.append({
            "caption": pair.prompt, "jpg_0": pair.jpg_0, "jpg_1": pair.jpg_1,
            "label_0": pair.label_0, "label_1": pair.label_1, "model_0": pair.model_0, "model_1": pair.model_1,
            "image_0_uid": uid_0, "image_1_uid": uid_1, "best_image_uid": best,
            "are_different": True, "has_label": True, "ranking_id": n,
            "num_example_per_prompt": per_prompt[pair.prompt],
            "score_0": pair.score_0, "score_1": pair.score_1, "seed": pair.seed, "key": pair.pair_key,
        })
    return rows


def _check_out(fs, root: str, url: str) -> None:
    """OUT holds nothing but what `write_pairs` writes (or does not exist yet)."""
    if not fs.exists(root):
        return
    names = [posixpath.basename(p.rstrip("/")) for p in fs.ls(root, detail=False)]
    foreign = [n for n in names if n not in (PAIRS_PARQUET, PAIRS_MANIFEST, TMP)
               and not (n.startswith("pairs-") and n.endswith(".tar"))]
    if foreign:
        raise ValueError(f"--out {url} holds other files ({', '.join(sorted(foreign)[:3])}); "
                         f"write pairs into an empty or new directory")


def write_pairs(pairs, out_url: str, samples_per_shard: int = 1000) -> dict:
    """Write `pairs` (from `build_pairs`) into `out_url` as WebDataset shards, `pairs.parquet` and
    `pairs_manifest.json`; returns the manifest."""
    if isinstance(samples_per_shard, bool) or not isinstance(samples_per_shard, int) or samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be a positive int, got {samples_per_shard!r}")
    url = str(out_url)
    fs, root = resolve(url, "--out")
    _check_out(fs, root, url)
    files = WholeFiles(fs, root)
    meta, pairs = pairs, list(pairs)
    scorer = getattr(meta, "scorer", "")
    try:
        fs.makedirs(root, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {url} is not writable: {e}") from None
    per_prompt = Counter(p.prompt for p in pairs)
    chunks = [pairs[s:s + samples_per_shard] for s in range(0, len(pairs), samples_per_shard)]
    shard_names = [f"pairs-{n:05d}.tar" for n in range(len(chunks))]
    for name, chunk in zip(shard_names, chunks):
        files.write(name, partial(_write_tar, pairs=chunk, scorer=scorer))
    for stale in fs.glob(f"{root}/pairs-*.tar"):
        if posixpath.basename(stale) not in shard_names:
            fs.rm(stale)

    def write_parquet(f) -> None:
        with pq.ParquetWriter(f, PAIRS_SCHEMA) as writer:
            for n, chunk in enumerate(chunks or [[]]):
                rows = _parquet_rows(chunk, n * samples_per_shard, per_prompt)
                writer.write_table(pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA))

    files.write(PAIRS_PARQUET, write_parquet)
    manifest = {
        "inputs": {"runs": [{"name": n, "dir": d} for n, d in getattr(meta, "runs", [])], "scorer": scorer,
                   "scorer_settings": getattr(meta, "scorer_settings", {}),
                   "min_margin": getattr(meta, "min_margin", None)},
        "counts": {"pairs": len(pairs), "ties": sum(p.is_tie for p in pairs),
                   "skipped_by_margin": getattr(meta, "skipped_by_margin", 0),
                   "skipped_not_ok": getattr(meta, "skipped_not_ok", 0), "sample_keys": getattr(meta, "keys", None),
                   "shards": len(shard_names)},
        "samples_per_shard": samples_per_shard,
        "shards": shard_names,
    }
    files.write(PAIRS_MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    files.clear()
    return manifest
