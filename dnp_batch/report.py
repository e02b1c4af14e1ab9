"""Reports over finished runs and sweeps: summary and paired-comparison tables, plots, contact sheets.

A run directory is what `jobs/generate.py` writes (shards, `index.parquet`, `manifest.json`); a
sweep directory holds `sweep.json` and one run directory per grid point (`dnp_batch.runs` reads
both, from a local path or an fsspec URL). Every point uses the same prompts and seeds, so samples
pair up by key across points. Tables, plots and the HTML page are written to local paths.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont, ImageOps
from scipy import stats

from .runs import INDEX, MANIFEST, SWEEP, Run, dir_name, is_sweep, read_sweep, sweep_points

# Record fields copied into the index frame, under these column names.
RECORD_FIELDS = {
    "nfe": "nfe", "seconds": "seconds", "guidance_scale": "guidance_scale",
    "dns_guidance_scale": "dns_guidance_scale", "guidance_rescale": "guidance_rescale",
    "num_inference_steps": "steps", "scheduler": "scheduler", "model": "model", "height": "height",
    "width": "width", "negative_prompt": "negative_prompt", "empty_negative": "empty_negative",
    "dns_clip_score": "dns_clip_score", "np_seed": "np_seed", "captions": "captions", "cnp_every": "cnp_every",
}
SUMMARY_STATS = ["n", "failures", "clip_mean", "clip_ci_low", "clip_ci_high", "nfe_mean", "seconds_per_image"]
# Where records carry the toy world's exact judge (and its image-quality proxy): per-attribute
# adherence with 95% Wilson intervals for all-correct, quality means; judged paired comparison.
JUDGE_ATTRS = ("shape", "colour", "count", "relation", "all")
QUALITY_METRICS = ("palette_error", "background_error", "stray_pixels")
JUDGE_STATS = [*(f"judge_{a}" for a in JUDGE_ATTRS), "judge_all_ci_low", "judge_all_ci_high",
               *(f"quality_{m}" for m in QUALITY_METRICS)]
JUDGE_COMPARISON = {"judge_n": "int64", "judge_wins": "int64", "judge_losses": "int64", "judge_p": "float64",
                    "judge_delta": "float64"}
COMPARISON_COLUMNS = {
    "point": "object", "baseline": "object", "n_pairs": "int64", "wins": "int64", "losses": "int64",
    "ties": "int64", "win_rate": "float64", "p_value": "float64", "mean_delta": "float64",
}
CONFIDENCE = 0.95
TILE = 160  # contact-sheet cell size in pixels
GAP = 4
PROMPTS_PER_SHEET = 24


@dataclass
class RunData:
    """One run (a sweep point or a plain run): its index with the record fields expanded; its
    images are read through `run` (a `dnp_batch.runs.Run` of `dir`)."""

    name: str
    dir: str
    overrides: dict
    config: dict
    manifest: dict
    index: pd.DataFrame
    run: Run | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.run is None:
            self.run = Run(self.dir)

    def members(self) -> dict[str, dict[str, tuple[str, int, int]]]:
        """{key: {ext: (shard path, data offset, size)}} over the run's shards (read once, cached)."""
        return self.run.members()

    def image(self, key: str) -> bytes | None:
        """The sample's image bytes, or None where the run holds none (a failed or unknown key)."""
        return self.run.image(key)

    def dns_image(self, key: str) -> bytes | None:
        """The sample's DNS image bytes (auto-dnp, cnp), or None."""
        return self.run.dns_image(key)

    @property
    def has_dns(self) -> bool:
        return self.run.has_dns


def expand_index(table: pd.DataFrame) -> pd.DataFrame:
    """The index rows plus prompt_id and the useful record fields (nfe, seconds, steps, answer.k, ...)."""
    df = table.reset_index(drop=True).copy()
    records = [json.loads(r) if isinstance(r, str) and r else {} for r in df["record"]]
    for src, name in RECORD_FIELDS.items():
        df[name] = pd.Series([r.get(src) for r in records], index=df.index, dtype=object).infer_objects()
    for section in ("answer", "metadata", "judge", "quality"):
        keys = dict.fromkeys(k for r in records for k, v in (r.get(section) or {}).items()
                             if not isinstance(v, (list, dict)))
        for k in keys:
            df[f"{section}.{k}"] = pd.Series([(r.get(section) or {}).get(k) for r in records],
                                             index=df.index, dtype=object).infer_objects()
    # every stored score but CLIP's (clip_score) as `score.NAME` (records' `scores` mapping, dnp_batch.scorers)
    names = dict.fromkeys(n for r in records for n in (r.get("scores") or {}) if n != "clip")
    for name in names:
        df[f"score.{name}"] = pd.to_numeric(pd.Series(
            [((r.get("scores") or {}).get(name) or {}).get("score") for r in records], index=df.index, dtype=object),
            errors="coerce")
    df["prompt_id"] = [key[: -len(f"_{seed}")] if key.endswith(f"_{seed}") else key
                       for key, seed in zip(df["key"], df["seed"])]
    return df


def load_run(path, name: str | None = None, overrides: dict | None = None) -> RunData:
    """A finished run directory (manifest.json + index.parquet; a local path or fsspec URL) as RunData."""
    run = Run(path)
    run.check_finished()
    manifest = run.manifest()
    index = expand_index(run.index_frame())
    return RunData(name or dir_name(path), run.url, dict(overrides or {}), manifest.get("config") or {},
                   manifest, index, run)


def load_runs(path) -> tuple[dict[str, RunData], str | None]:
    """A sweep (one RunData per point, in sweep order, and its baseline) or a single run (baseline None)."""
    if is_sweep(path):
        sweep = read_sweep(path)
        runs = {}
        for name, run_dir, overrides in sweep_points(path, sweep):
            try:
                runs[name] = load_run(run_dir, name, overrides)
            except ValueError as e:
                raise ValueError(f"sweep point {name!r}: {e}") from None
        return runs, sweep.get("baseline")
    if Run(path).is_finished:
        run = load_run(path)
        return {run.name: run}, None
    raise ValueError(f"{path} is not a dnp_batch run or sweep (no {SWEEP} or {MANIFEST} + {INDEX}); "
                     f"pass the --out directory of a finished jobs/generate.py run or sweep")


def _flatten(d: dict, prefix: str = "") -> dict:
    """{"answer": {"k": 3}} -> {"answer.k": 3}; dotted keys stay as they are."""
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _param_columns(runs: dict[str, RunData]) -> list[str]:
    """The overridden parameters besides method and guidance_scale, in order of first appearance."""
    keys = dict.fromkeys(k for run in runs.values() for k in _flatten(run.overrides))
    return [k for k in keys if k not in ("method", "guidance_scale")]


def t_interval(values) -> tuple[float, float, float]:
    """(mean, low, high): the 95% Student-t interval of the mean; NaN bounds with fewer than 2 values."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    sem = float(stats.sem(x))
    if sem == 0:
        return mean, mean, mean
    low, high = stats.t.interval(CONFIDENCE, len(x) - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def score_names(runs: dict[str, RunData]) -> list[str]:
    """The stored scores besides CLIP's in any run (the judge's all-correct has its own columns)."""
    return [n for n in dict.fromkeys(c[len("score."):] for run in runs.values() for c in run.index.columns
                                     if c.startswith("score.")) if n != "judge"]


def score_stats(names: list[str]) -> list[str]:
    return [f"{n}_{stat}" for n in names for stat in ("mean", "ci_low", "ci_high")]


def summarize(runs: dict[str, RunData]) -> pd.DataFrame:
    """One row per point: its parameters, sample and failure counts, mean CLIP score with its 95%
    t-interval, mean NFE and seconds per image (over ok samples); then each other stored score's mean
    with its 95% t-interval (`pickscore_mean`, `pickscore_ci_low`, ...)."""
    names = score_names(runs)
    params = _param_columns(runs)
    rows = []
    for name, run in runs.items():
        df = run.index
        ok = df[df["status"] == "ok"]
        flat_overrides = _flatten(run.overrides)
        mean, low, high = t_interval(ok["clip_score"].dropna())
        row = {"point": name,
               "method": flat_overrides.get("method", run.config.get("method")),
               "guidance_scale": flat_overrides.get("guidance_scale", run.config.get("guidance_scale"))}
        row.update({p: flat_overrides.get(p) for p in params})  # blank where the point keeps the base value
        row.update(n=len(ok), failures=int((df["status"] != "ok").sum()), clip_mean=mean, clip_ci_low=low,
                   clip_ci_high=high, nfe_mean=float(ok["nfe"].astype(float).mean()) if len(ok) else math.nan,
                   seconds_per_image=float(ok["seconds"].astype(float).mean()) if len(ok) else math.nan)
        for score in names:
            values = ok[f"score.{score}"].dropna() if f"score.{score}" in ok else []
            row.update(zip(score_stats([score]), t_interval(values)))
        row.update(_judge_stats(ok))
        rows.append(row)
    judged = [c for c in JUDGE_STATS if any(c in r for r in rows)]
    summary = pd.DataFrame(rows, columns=["point", "method", "guidance_scale", *params, *SUMMARY_STATS,
                                          *score_stats(names), *judged])
    summary["guidance_scale"] = pd.to_numeric(summary["guidance_scale"], errors="coerce")
    return summary


def _judge_stats(ok: pd.DataFrame) -> dict:
    """The judge's means (all-correct with its 95% Wilson interval) and the quality means, if judged."""
    if "judge.all" not in ok or ok["judge.all"].isna().all():
        return {}
    out = {}
    for attr in JUDGE_ATTRS:
        values = pd.to_numeric(ok.get(f"judge.{attr}"), errors="coerce").dropna()
        out[f"judge_{attr}"] = float(values.mean()) if len(values) else math.nan
        if attr == "all" and len(values):
            ci = stats.binomtest(int(values.sum()), len(values)).proportion_ci(CONFIDENCE, method="wilson")
            out["judge_all_ci_low"], out["judge_all_ci_high"] = float(ci.low), float(ci.high)
    for metric in QUALITY_METRICS:
        if f"quality.{metric}" in ok:
            out[f"quality_{metric}"] = float(pd.to_numeric(ok[f"quality.{metric}"], errors="coerce").mean())
    return out


def _judged(run: RunData) -> pd.Series:
    df = run.index
    if "judge.all" not in df:
        return pd.Series(dtype=float)
    ok = df[(df["status"] == "ok") & df["judge.all"].notna()]
    return pd.Series(ok["judge.all"].to_numpy(float), index=ok["key"].to_numpy())


def _score_column(score: str) -> str:
    return "clip_score" if score == "clip" else f"score.{score}"


def _scores(run: RunData, score: str = "clip") -> pd.Series:
    df, column = run.index, _score_column(score)
    if column not in df:
        return pd.Series(dtype=float)
    ok = df[(df["status"] == "ok") & df[column].notna()]
    return pd.Series(ok[column].to_numpy(float), index=ok["key"].to_numpy())


def compare(runs: dict[str, RunData], baseline: str | None, score: str = "clip") -> pd.DataFrame:
    """Each point against the baseline, paired by sample key (scored and ok in both): wins, losses and
    ties on `score` (CLIP's by default, or any stored score: pickscore, hps, ...), win rate over decided
    pairs, the sign test's two-sided p-value, mean delta. Empty without a baseline; the baseline's own
    row is left out."""
    if baseline is not None and baseline not in runs:
        raise ValueError(f"baseline {baseline!r} is not a point; use one of {list(runs)}")
    if score != "clip" and not any(_score_column(score) in run.index for run in runs.values()):
        stored = ", ".join(["clip", *score_names(runs)])
        raise ValueError(f"no run stored the score {score!r}; compare on one of: {stored}")
    rows = []
    if baseline is not None:
        base = _scores(runs[baseline], score)
        for name, run in runs.items():
            if name == baseline:
                continue
            pairs = pd.concat([_scores(run, score), base], axis=1, join="inner", keys=["point", "baseline"])
            delta = pairs["point"] - pairs["baseline"]
            wins, losses = int((delta > 0).sum()), int((delta < 0).sum())
            decided = wins + losses
            rows.append({
                "point": name, "baseline": baseline, "n_pairs": len(pairs), "wins": wins, "losses": losses,
                "ties": int((delta == 0).sum()),
                "win_rate": wins / decided if decided else math.nan,
                "p_value": float(stats.binomtest(wins, decided, 0.5).pvalue) if decided else math.nan,
                "mean_delta": float(delta.mean()) if len(delta) else math.nan,
                **_judge_pairs(run, runs[baseline]),
            })
    columns = {**COMPARISON_COLUMNS, **(JUDGE_COMPARISON if any("judge_n" in r for r in rows) else {})}
    return pd.DataFrame(rows, columns=list(columns)).astype(columns)


def _judge_pairs(run: RunData, base: RunData) -> dict:
    """Judged all-correct paired by key: wins (right where the baseline is wrong), losses, the exact
    McNemar p-value and the mean difference; {} when either side has no judge."""
    pairs = pd.concat([_judged(run), _judged(base)], axis=1, join="inner", keys=["point", "baseline"])
    if pairs.empty:
        return {}
    wins = int(((pairs["point"] == 1) & (pairs["baseline"] == 0)).sum())
    losses = int(((pairs["point"] == 0) & (pairs["baseline"] == 1)).sum())
    p = float(stats.binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else 1.0
    return {"judge_n": len(pairs), "judge_wins": wins, "judge_losses": losses, "judge_p": p,
            "judge_delta": float((pairs["point"] - pairs["baseline"]).mean())}


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns mixing types (override values) as JSON text, so Parquet can hold them."""
    out = df.copy()
    for col in out.columns[out.dtypes == object]:
        kinds = {type(v) for v in out[col] if not _missing(v)}
        if len(kinds) > 1 or kinds - {str}:
            out[col] = [None if v is None else json.dumps(v, default=str) for v in out[col]]
    return out


def _write_tables(summary: pd.DataFrame, comparison: pd.DataFrame, out_dir) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, df in (("summary", summary), ("comparison", comparison)):
        _parquet_safe(df).to_parquet(out / f"{name}.parquet", index=False)
        df.to_csv(out / f"{name}.csv", index=False)
        paths += [out / f"{name}.parquet", out / f"{name}.csv"]
    return paths


def write_tables(runs: dict[str, RunData], out_dir, baseline: str | None, score: str = "clip") -> list[Path]:
    """summary.parquet/.csv and comparison.parquet/.csv (on `score`) in out_dir; returns their paths."""
    return _write_tables(summarize(runs), compare(runs, baseline, score), out_dir)


def _series_label(row: pd.Series, params: list[str]) -> str:
    extra = ", ".join(f"{p}={_fmt(row[p])}" for p in params if not _missing(row[p]))
    return f"{row['method']} ({extra})" if extra else str(row["method"])


def plot_clip_vs_guidance(summary: pd.DataFrame, path) -> Path:
    """Mean CLIP score against guidance scale, one line per method (and other parameters), 95% CI bars."""
    return _plot_vs_guidance(summary, path, ("clip_mean", "clip_ci_low", "clip_ci_high"), "no CLIP scores",
                             f"CLIP score (mean, {CONFIDENCE:.0%} CI)", "CLIP score vs guidance scale")


def plot_score_vs_guidance(summary: pd.DataFrame, path, score: str) -> Path:
    """A stored score's mean (pickscore, hps, ...) against guidance scale, 95% CI bars."""
    return _plot_vs_guidance(summary, path, tuple(score_stats([score])), f"no {score} scores",
                             f"{score} (mean, {CONFIDENCE:.0%} CI)", f"{score} vs guidance scale")


def plot_judge_vs_guidance(summary: pd.DataFrame, path) -> Path:
    """The toy judge's all-correct against guidance scale, 95% Wilson bars."""
    return _plot_vs_guidance(summary, path, ("judge_all", "judge_all_ci_low", "judge_all_ci_high"), "no judge",
                             f"judge all-correct ({CONFIDENCE:.0%} Wilson CI)", "Adherence vs guidance scale")


def _plot_vs_guidance(summary: pd.DataFrame, path, cols: tuple[str, str, str], empty: str, ylabel: str,
                      title: str) -> Path:
    mean_col, low_col, high_col = cols
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    params = [c for c in summary.columns if c not in ("point", "method", "guidance_scale", *SUMMARY_STATS, *JUDGE_STATS)
              and not c.endswith(("_mean", "_ci_low", "_ci_high"))]
    data = summary.dropna(subset=[mean_col, "guidance_scale"])
    if data.empty:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)
    labels = data.apply(lambda r: _series_label(r, params), axis=1) if len(data) else pd.Series(dtype=str)
    series = list(dict.fromkeys(labels))
    span = float(np.ptp(data["guidance_scale"])) if len(data) else 0.0
    dodge = 0.02 * (span or 1.0)  # side by side, so series at the same w do not hide each other's bars
    for i, label in enumerate(series):
        part = data[labels == label].sort_values("guidance_scale")
        yerr = np.nan_to_num(np.vstack([part[mean_col] - part[low_col], part[high_col] - part[mean_col]]))
        x = part["guidance_scale"] + dodge * (i - (len(series) - 1) / 2)
        ax.errorbar(x, part[mean_col], yerr=yerr, marker="o", capsize=3, label=label)
    ax.set_xlabel("guidance scale w")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(data):
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def plot_clip_vs_nfe(summary: pd.DataFrame, path) -> Path:
    """Mean CLIP score against mean NFE per image, one labelled point per grid point."""
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    data = summary.dropna(subset=["clip_mean", "nfe_mean"])
    if data.empty:
        ax.text(0.5, 0.5, "no CLIP scores", ha="center", va="center", transform=ax.transAxes)
    for method in dict.fromkeys(data["method"]):
        part = data[data["method"] == method]
        yerr = np.nan_to_num(np.vstack([part["clip_mean"] - part["clip_ci_low"],
                                        part["clip_ci_high"] - part["clip_mean"]]))
        ax.errorbar(part["nfe_mean"], part["clip_mean"], yerr=yerr, fmt="o", capsize=3, label=str(method))
    for _, row in data.iterrows():
        ax.annotate(str(row["point"]), (row["nfe_mean"], row["clip_mean"]), textcoords="offset points",
                    xytext=(4, 4), fontsize="small")
    ax.margins(x=0.15)
    ax.set_xlabel("NFE per image (mean)")
    ax.set_ylabel(f"CLIP score (mean, {CONFIDENCE:.0%} CI)")
    ax.set_title("CLIP score vs cost")
    ax.grid(alpha=0.3)
    if len(data):
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def _font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=13)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """Text cut (with '..') to fit width pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "..", font=font) > width:
        text = text[:-1]
    return text + ".."


def sheet_columns(runs: dict[str, RunData]) -> list[tuple[str, RunData, bool]]:
    """(label, run, is_dns) per contact-sheet column: each point, then its DNS images where it has them."""
    columns = []
    for name, run in runs.items():
        columns.append((name, run, False))
        if run.has_dns:
            columns.append((f"{name} DNS", run, True))
    return columns


def sheet_rows(runs: dict[str, RunData]) -> tuple[int | None, list[str]]:
    """(seed, prompt ids): the smallest seed in any run, and the prompts that have it, in index order."""
    frames = [run.index for run in runs.values() if len(run.index)]
    if not frames:
        return None, []
    seed = int(min(df["seed"].min() for df in frames))
    ids = dict.fromkeys(pid for df in frames for pid in df.loc[df["seed"] == seed, "prompt_id"])
    return seed, list(ids)


def _cell(run: RunData, key: str, is_dns: bool, tile: int, font) -> Image.Image:
    data = run.dns_image(key) if is_dns else run.image(key)
    if data is not None:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            method = Image.Resampling.NEAREST if max(im.size) < tile else Image.Resampling.LANCZOS
            return ImageOps.pad(im, (tile, tile), method=method, color=(255, 255, 255))
    cell = Image.new("RGB", (tile, tile), (220, 220, 220))
    status = run.index.loc[run.index["key"] == key, "status"]
    text = "failed" if (status == "failed").any() else "missing"
    draw = ImageDraw.Draw(cell)
    draw.text(((tile - draw.textlength(text, font=font)) // 2, tile // 2 - GAP), text, fill=(120, 0, 0), font=font)
    return cell


def contact_sheets(runs: dict[str, RunData], out_dir, prompts_per_sheet: int = PROMPTS_PER_SHEET,
                   tile: int = TILE) -> list[Path]:
    """PNG grids of one seed (the smallest): rows = prompts, columns = points (and their DNS images),
    at most prompts_per_sheet rows per sheet. Returns the sheets' paths (contact-seedS-NN.png)."""
    if prompts_per_sheet < 1:
        raise ValueError(f"prompts_per_sheet must be >= 1, got {prompts_per_sheet}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("contact-*.png"):
        old.unlink()
    seed, ids = sheet_rows(runs)
    columns = sheet_columns(runs)
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = probe.textbbox((0, 0), "Ag", font=font)[3]
    top = line + 2 * GAP
    left = min(int(max((probe.textlength(pid, font=font) for pid in ids), default=0)), 2 * tile) + 2 * GAP
    paths = []
    for n, start in enumerate(range(0, len(ids), prompts_per_sheet), start=1):
        chunk = ids[start:start + prompts_per_sheet]
        sheet = Image.new("RGB", (left + len(columns) * (tile + GAP), top + len(chunk) * (tile + GAP)), "white")
        draw = ImageDraw.Draw(sheet)
        for c, (label, _, _) in enumerate(columns):
            draw.text((left + c * (tile + GAP), GAP), _fit(draw, label, font, tile), fill="black", font=font)
        for r, pid in enumerate(chunk):
            y = top + r * (tile + GAP)
            draw.text((GAP, y + (tile - line) // 2), _fit(draw, pid, font, left - 2 * GAP), fill="black",
                      font=font)
            for c, (_, run, is_dns) in enumerate(columns):
                sheet.paste(_cell(run, f"{pid}_{seed}", is_dns, tile, font), (left + c * (tile + GAP), y))
        path = out / f"contact-seed{seed}-{n:02d}.png"
        sheet.save(path)
        paths.append(path)
    return paths


def _fmt(value) -> str:
    if _missing(value):
        return "–"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value)


def _table(df: pd.DataFrame) -> dict:
    return {"columns": list(df.columns), "rows": [[_fmt(v) for v in row] for row in df.itertuples(index=False)]}


TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
tr.baseline td { background: #fff8dc; }
table.text td { text-align: left; }
.note { color: #666; font-size: 0.9em; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="note">{{ kind }} at <code>{{ path }}</code>: {{ summary.rows | length }} point(s){% if baseline %},
baseline <b>{{ baseline }}</b>{% endif %}. Score intervals (CLIP{% for s in scores %}, {{ s }}{% endfor %}) are
{{ confidence }} Student-t intervals of the mean.</p>

<h2>Summary</h2>
{% macro table(t, highlight=None, cls="") %}
<table{% if cls %} class="{{ cls }}"{% endif %}>
<tr>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in t.rows %}<tr{% if highlight and row[0] == highlight %} class="baseline"{% endif %}>
{% for v in row %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}
</table>
{% endmacro %}
{{ table(summary, baseline) }}

<h2>Paired comparison{% if baseline %} vs {{ baseline }}{% endif %}</h2>
{% if comparison.rows %}
<p class="note">Samples paired by key (ok and scored in both). Wins/losses/ties on the {{ score }} score; win rate
over decided pairs; p: two-sided sign test. Where records carry the toy world's judge: judge_wins/losses are
samples all-correct on one side only, judge_p the exact McNemar test, judge_delta the difference in
all-correct.</p>
{{ table(comparison) }}
{% else %}
<p class="note">No comparison: {% if baseline %}no other points{% else %}no baseline (a single run, or a sweep
without one){% endif %}.</p>
{% endif %}

<h2>Plots</h2>
{% for plot in plots %}<img src="{{ plot }}" alt="{{ plot }}">
{% endfor %}

<h2>Contact sheets{% if seed is not none %} (seed {{ seed }}){% endif %}</h2>
{% for sheet in sheets %}<div><img src="{{ sheet }}" alt="{{ sheet }}"></div>
{% else %}<p class="note">No samples.</p>
{% endfor %}

<h2>Prompts</h2>
{{ table(prompts, cls="text") }}
</body>
</html>
"""


def write_report(path, out_dir=None, score: str = "clip") -> Path:
    """Tables into `path`, and an HTML report with plots and contact sheets into `path/report/` (or
    out_dir), the paired comparison on `score`; returns the index.html path."""
    runs, baseline = load_runs(path)
    root = Path(path)
    out = Path(out_dir) if out_dir is not None else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    summary, comparison = summarize(runs), compare(runs, baseline, score)
    _write_tables(summary, comparison, root)
    plots = [plot_clip_vs_guidance(summary, out / "clip_vs_guidance.png"),
             plot_clip_vs_nfe(summary, out / "clip_vs_nfe.png")]
    for name in score_names(runs):
        plots.append(plot_score_vs_guidance(summary, out / f"{name}_vs_guidance.png", name))
    if "judge_all" in summary:
        plots.append(plot_judge_vs_guidance(summary, out / "judge_vs_guidance.png"))
    sheets = contact_sheets(runs, out)
    seed, _ = sheet_rows(runs)
    sweep = is_sweep(root)
    title = (read_sweep(root).get("name") if sweep else None) or dir_name(root)
    prompts = pd.concat([run.index[["prompt_id", "prompt"]] for run in runs.values()]).drop_duplicates("prompt_id")
    html = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True).from_string(TEMPLATE).render(
        title=title, kind="Sweep" if sweep else "Run", path=str(root), baseline=baseline,
        confidence=f"{CONFIDENCE:.0%}", summary=_table(summary), comparison=_table(comparison),
        scores=score_names(runs), score=score, plots=[p.name for p in plots], sheets=[s.name for s in sheets], seed=seed, prompts=_table(prompts),
    )
    index = out / "index.html"
    index.write_text(html)
    return index
