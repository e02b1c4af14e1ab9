"""Does ANSWER (or DNP) beat CFG? Every method over its guidance range in the toy world, judged
exactly, in two phases: an exploration on validation prompts, then a confirmation on fresh ones.

    python bench/fidelity.py explore            # phase 1 -> bench/fidelity/ (curves, candidates.json)
    python bench/fidelity.py confirm            # phase 2 -> bench/fidelity/confirm/ (tests, verdict.md)
    python bench/fidelity.py confirm-amended    # the amendment below -> bench/fidelity/confirm-amended/
    python bench/fidelity.py explore --quick --out /tmp/fq && python bench/fidelity.py confirm --quick --out /tmp/fq

The protocol, committed before either phase ran on the model it judges:

Phase 1, exploratory (`explore`). Every variant of `variants()` (CFG, CFG + rescale, APG, NP with a
generic negative, auto-DNP and CNP with the exact judge as captioner, ANSWER and its variants) at
every w of W_GRID on `--n-val` validation prompts (`toyworld.train.VALIDATION_PROMPT_SEED`; sample
i has seed i): per point every attribute with 95% Wilson intervals, the quality proxy
(`toyworld.judge.quality`) and the measured NFE. Nothing in this phase is a test.

Selection (`select_candidates`, at the end of phase 1, from validation results only; written to
candidates.json):
  a. each variant's best w: the highest validation all-correct (ties: the smaller w);
  b. a variant is eligible unless, at its best w, a quality proxy (lower is better) is worse than
     CFG's at CFG's best w: the 95% paired-bootstrap interval of (variant - CFG) over the shared
     validation prompt x seed samples lies wholly above 0;
  c. at most three candidates, one per slot: the best eligible ANSWER variant, the best eligible DNP
     variant (auto-DNP, CNP) and the best other eligible variant, "best" by validation all-correct
     at the best w (ties: fewer NFE, then the order of `variants()`).

Phase 2, confirmatory (`confirm`). `--n-confirm` (>= 1,000) fresh held-out prompt x seed samples:
prompts of CONFIRM_PROMPT_SEED, sample i with seed CONFIRM_SEED0 + i, which no other phase or
command uses. CFG at its best w and every candidate at its best w on the same samples. For each
candidate and attribute, relation first (ATTRS_CONFIRM), on the samples where both are judged: the
rates with Wilson intervals, the paired difference with a 95% paired-bootstrap interval and the
exact McNemar p; Holm over every (candidate, attribute) comparison of this phase (at most 15),
alpha = 0.05. The quality proxies' paired intervals are the guard.

Verdict (`verdict`): a candidate beats CFG when its relation or its all-correct difference is
positive with Holm p < alpha, no attribute is worse with Holm p < alpha, and no quality proxy's
interval lies wholly above 0. The toy defaults follow it: the winner with the highest confirmatory
all-correct (ties: fewer NFE), otherwise CFG at its best w.

Amendment (`confirm-amended`; committed on 2026-12-08, after phase 1's results were known and before
any result of phase 2 was seen). Phase 1's quality guard (b), applied at selection on 64 paired
validation samples with no correction over 3 proxies x 21 variants, left no ANSWER or DNP variant
eligible, so phase 2 cannot answer the question this study exists for. The amendment adds a second,
secondary confirmatory analysis; phase 2 and its verdict stand as registered, and the toy defaults
follow phase 2 alone. Its selection (`select_amended`, validation results only): per slot of the
question (answer, dnp; the other slot is phase 2's) the variant with the highest validation
all-correct at its best w (ties: fewer NFE, then the order of `variants()`), the quality proxies
not consulted at selection. Its data: phase
2's samples (the same prompts and seeds; rows of a variant that phase 2 already ran at the same w
are reused, being the same numbers, and the others are generated). Its tests: as phase 2, Holm over
every (candidate, attribute) comparison of the amendment (at most 10). Its verdict: `verdict`, the
same rule, so a candidate worse than CFG on a quality proxy on the confirmatory samples does not
beat CFG. It writes confirm-amended/ (samples.csv, tests.csv, summary.md, verdict.md,
differences.png).

Samples run in `--workers` processes of one torch thread each, in fixed chunks, so every number is
the same whichever worker draws it. Phase 1 writes samples.csv, points.csv, candidates.json,
summary.md and the curves (adherence_vs_w.png, relation_vs_w.png, adherence_vs_nfe.png); phase 2
writes confirm/samples.csv, confirm/tests.csv, confirm/summary.md, confirm/verdict.md and
confirm/differences.png. `--verdict DIR` re-applies the rule to DIR/tests.csv alone.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GENERIC_NEGATIVE = "a blurry noisy picture"
W_GRID = (1.5, 2.0, 3.0, 5.0, 7.5, 10.0)
ATTRS = ("shape", "colour", "count", "relation", "all")
ATTRS_CONFIRM = ("relation", "all", "shape", "colour", "count")  # the confirmatory report's order
QUALITY = ("palette_error", "background_error", "stray_pixels")
BATCH = 16
CHUNK = 4 * BATCH  # samples per job
BOOTSTRAP = 2000
ALPHA = 0.05
CONFIRM_PROMPT_SEED = 20261201  # the confirmatory prompts: no other phase or command draws from it
CONFIRM_SEED0 = 1_000_000  # sample i of the confirmation has seed CONFIRM_SEED0 + i
MIN_CONFIRM = 1000
DNP_VARIANTS = ("auto-dnp", "cnp-every5")


def variants():
    """(name, method: a name or its settings, generate() keyword arguments) of every variant the study runs."""
    from dnp_batch.methods import AnswerSettings, ApgSettings, CnpSettings
    from dnp_batch.toyworld.judge import JudgeCaptioner

    judge = JudgeCaptioner()
    a = AnswerSettings
    return [
        ("cfg", "cfg", {}),
        ("cfg-rescale0.7", "cfg", {"guidance_rescale": 0.7}),
        ("apg", "apg", {}),  # diffusers' guider defaults: eta 1, no momentum -> CFG with a norm clip
        ("apg-eta0-m-0.5", ApgSettings(eta=0.0, momentum=-0.5), {}),
        ("np-generic", "np", {"negative_prompts": GENERIC_NEGATIVE}),
        ("auto-dnp", "auto-dnp", {"captioner": judge}),
        ("cnp-every5", CnpSettings(every=5), {"captioner": judge}),
        ("answer", a(), {}),  # docs/METHODS.md's defaults (dns_guided, w_dns = w, global, λ = null)
        ("answer-k1", a(k=1), {}),
        ("answer-k3", a(k=3), {}),
        ("answer-until0.25", a(until=0.25), {}),
        ("answer-until1.0", a(until=1.0), {}),
        ("answer-linear-k3", a(k=3, shape="linear"), {}),
        ("answer-norm-none", a(normalize="none"), {}),
        ("answer-norm-channel", a(normalize="channel"), {}),
        ("answer-uncond", a(negative_eps="uncond"), {}),
        ("answer-cond", a(negative_eps="cond"), {}),
        ("answer-x0", a(negative_eps="x0", normalize="none"), {}),
        ("answer-wdns1", a(), {"dns_guidance_scale": 1.0}),
        ("answer-lambda1", a(negative_scale=1.0), {}),
        ("answer-lambda3", a(negative_scale=3.0), {}),
        ("answer-x0-lambda1", a(negative_eps="x0", normalize="none", negative_scale=1.0), {}),
    ]


QUICK = ("cfg", "apg-eta0-m-0.5", "auto-dnp", "answer-lambda1")
QUICK_GRID = (2.0, 5.0)


def slot(name: str) -> str:
    """The candidate slot of a variant: answer, dnp or other (CFG itself is the baseline)."""
    return "answer" if name.startswith("answer") else "dnp" if name in DNP_VARIANTS else "other"


# ---- generation (in worker processes) ------------------------------------------------------------

_PIPE = None


def _init_worker(model: str) -> None:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from dnp_batch.models import load_pipeline

    global _PIPE
    torch.set_num_threads(1)  # the numbers do not depend on the machine's core count
    _PIPE = load_pipeline(model)


def run_point(job: tuple) -> list[dict]:
    """One (variant, w, split) point: generate, judge, measure quality; one row per sample."""
    from dnp_batch import generate
    from dnp_batch.toyworld.judge import judge, quality

    name, w, split, texts, seeds, steps = job
    method, kwargs = next((m, kw) for n, m, kw in variants() if n == name)
    kwargs = dict(kwargs)
    if "negative_prompts" in kwargs:
        kwargs["negative_prompts"] = [kwargs["negative_prompts"]] * len(texts)
    t0 = time.perf_counter()
    out = generate(_PIPE, texts, seeds, method=method, guidance_scale=w, num_inference_steps=steps, batch_size=BATCH,
                   **kwargs)
    seconds = (time.perf_counter() - t0) / len(texts)
    rows = []
    for text, seed, image, record in zip(texts, seeds, out.images, out.records):
        rows.append({"variant": name, "method": record["method"], "w": w, "split": split, "prompt": text, "seed": seed,
                     "nfe": record["nfe"], "seconds": round(seconds, 4), **judge(image, text), **quality(image)})
    return rows


def run_jobs(jobs: list[tuple], model: str, workers: int) -> list[dict]:
    if workers <= 1:
        _init_worker(model)
        results = [run_point(job) for job in jobs]
    else:
        with mp.get_context("spawn").Pool(workers, _init_worker, (model,)) as pool:
            results = pool.map(run_point, jobs, chunksize=1)
    return [row for rows in results for row in rows]


# ---- statistics ----------------------------------------------------------------------------------


def mcnemar_p(a: np.ndarray, b: np.ndarray) -> float:
    """Exact two-sided McNemar test of paired binary outcomes (binomial on the discordant pairs)."""
    from scipy.stats import binomtest

    only_a, only_b = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue) if only_a + only_b else 1.0


def paired_bootstrap(a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of mean(a - b) over resampled pairs (NaN pairs dropped)."""
    keep = ~(np.isnan(a) | np.isnan(b))
    d = a[keep] - b[keep]
    if len(d) == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (BOOTSTRAP, len(d)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def point_summary(rows: list[dict]) -> dict:
    from dnp_batch.toyworld.evaluate import wilson

    out = {"n": len(rows), "nfe": rows[0]["nfe"], "seconds_per_image": float(np.mean([r["seconds"] for r in rows]))}
    for attr in ATTRS:
        values = [r[attr] for r in rows if not math.isnan(r[attr])]
        out[attr] = float(np.mean(values)) if values else math.nan
        out[f"{attr}_low"], out[f"{attr}_high"] = wilson(sum(values), len(values))
        out[f"{attr}_n"] = len(values)
    for q in QUALITY:
        out[q] = float(np.nanmean([r[q] for r in rows]))
    return out


def best_w(points: dict, name: str, grid) -> float:
    """The variant's best w: the highest validation all-correct (ties: the smaller w)."""
    return max(grid, key=lambda w: (points[(name, w)]["all"], -w))


def column(rows: list[dict], key: str) -> np.ndarray:
    return np.array([float(r[key]) for r in rows], dtype=float)


def worse_quality(rows: list[dict], base: list[dict]) -> list[str]:
    """The quality proxies (lower is better) whose 95% paired-bootstrap interval of (rows - base) lies wholly above 0."""
    assert [(r["prompt"], r["seed"]) for r in rows] == [(r["prompt"], r["seed"]) for r in base]
    return [q for q in QUALITY if paired_bootstrap(column(rows, q), column(base, q))[0] > 0]


# ---- the rules (committed before either phase ran on the model it judges) -------------------------


def select_candidates(points: dict, val_rows: dict, names: list[str], grid) -> dict:
    """Phase 1's selection (module docstring, a-c): {"best_w", "candidates", "eligible", "worse_quality"}."""
    best = {n: best_w(points, n, grid) for n in names}
    base = val_rows[("cfg", best["cfg"])]
    worse = {n: worse_quality(val_rows[(n, best[n])], base) for n in names if n != "cfg"}
    eligible = [n for n in names if n != "cfg" and not worse[n]]
    candidates = []
    for s in ("answer", "dnp", "other"):
        pool = [n for n in eligible if slot(n) == s]
        if pool:
            candidates.append(max(pool, key=lambda n: (points[(n, best[n])]["all"], -points[(n, best[n])]["nfe"],
                                                        -names.index(n))))
    return {"best_w": best, "candidates": candidates, "eligible": eligible, "worse_quality": worse}


def select_amended(points: dict, names: list[str], best: dict[str, float]) -> list[str]:
    """The amendment's selection (module docstring): per slot of the question (answer, dnp), the best
    variant by validation all-correct at its best w; quality is the verdict's guard, not a filter here."""
    candidates = []
    for s in ("answer", "dnp"):
        pool = [n for n in names if n != "cfg" and slot(n) == s]
        if pool:
            candidates.append(max(pool, key=lambda n: (points[(n, best[n])]["all"], -points[(n, best[n])]["nfe"],
                                                        -names.index(n))))
    return candidates


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone), for the family of tests given."""
    order = sorted(pvalues, key=pvalues.get)
    adjusted, running = {}, 0.0
    for i, name in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * pvalues[name]))
        adjusted[name] = running
    return adjusted


def confirm_tests(rows: dict[str, list[dict]], best: dict[str, float]) -> list[dict]:
    """Every candidate against CFG on the same samples: one row per (candidate, attribute), relation first,
    with raw and Holm-adjusted exact McNemar p (Holm over all rows), plus the quality guard."""
    from dnp_batch.toyworld.evaluate import wilson

    base = rows["cfg"]
    out = []
    for name, rs in rows.items():
        if name == "cfg":
            continue
        worse = worse_quality(rs, base)
        for attr in ATTRS_CONFIRM:
            a, b = column(rs, attr), column(base, attr)
            keep = ~(np.isnan(a) | np.isnan(b))
            a, b = a[keep], b[keep]
            low, high = paired_bootstrap(a, b)
            out.append({"variant": name, "w": best[name], "cfg_w": best["cfg"], "nfe": int(rs[0]["nfe"]),
                        "cfg_nfe": int(base[0]["nfe"]), "attribute": attr, "n": int(keep.sum()),
                        "rate": float(a.mean()), "rate_low": wilson(a.sum(), len(a))[0],
                        "rate_high": wilson(a.sum(), len(a))[1], "cfg_rate": float(b.mean()),
                        "cfg_rate_low": wilson(b.sum(), len(b))[0], "cfg_rate_high": wilson(b.sum(), len(b))[1],
                        "diff": float((a - b).mean()), "diff_low": low, "diff_high": high,
                        "only_variant": int(((a == 1) & (b == 0)).sum()), "only_cfg": int(((a == 0) & (b == 1)).sum()),
                        "p": mcnemar_p(a, b), "worse_quality": ";".join(worse)})
    adjusted = holm({(r["variant"], r["attribute"]): r["p"] for r in out})
    for r in out:
        r["holm_p"] = adjusted[(r["variant"], r["attribute"])]
    return out


def verdict(tests: list[dict]) -> dict:
    """The confirmatory rule (module docstring): which candidates beat CFG, and the toy default."""
    rows = []
    for name in dict.fromkeys(r["variant"] for r in tests):
        by = {r["attribute"]: r for r in tests if r["variant"] == name}
        sig = {a: float(r["holm_p"]) < ALPHA for a, r in by.items()}
        better = [a for a in ATTRS_CONFIRM if a in by and sig[a] and float(by[a]["diff"]) > 0]
        worse = [a for a in ATTRS_CONFIRM if a in by and sig[a] and float(by[a]["diff"]) < 0]
        quality = [q for q in str(by["all"]["worse_quality"]).split(";") if q]
        beats = bool({"relation", "all"} & set(better)) and not worse and not quality
        rows.append({"variant": name, "w": float(by["all"]["w"]), "nfe": int(by["all"]["nfe"]),
                     "all": float(by["all"]["rate"]), "relation": float(by["relation"]["rate"]),
                     "better": better, "worse": worse, "worse_quality": quality, "beats_cfg": beats})
    winners = [r for r in rows if r["beats_cfg"]]
    first = tests[0] if tests else {}
    cfg = {"variant": "cfg", "w": float(first.get("cfg_w", math.nan)), "nfe": int(first.get("cfg_nfe", 0) or 0)}
    default = max(winners, key=lambda r: (r["all"], -r["nfe"])) if winners else cfg
    return {"rows": rows, "default": default, "any_beats_cfg": bool(winners),
            "answer_beats_cfg": any(slot(r["variant"]) == "answer" for r in winners),
            "dnp_beats_cfg": any(slot(r["variant"]) == "dnp" for r in winners)}


def verdict_markdown(v: dict) -> str:
    d = v["default"]
    lines = [f"Default by the rule: **{d['variant']}** at w = {d['w']:g}. "
             + ("; ".join(f"{r['variant']} beats CFG" for r in v["rows"] if r["beats_cfg"]) or
                "No candidate beats CFG (Holm-adjusted exact McNemar over the confirmatory comparisons, alpha = 0.05)")
             + ".", "",
             "| candidate | w | NFE | relation | all-correct | better than CFG | worse than CFG | worse quality | beats CFG |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in v["rows"]:
        lines.append(f"| {r['variant']} | {r['w']:g} | {r['nfe']} | {r['relation']:.3f} | {r['all']:.3f} | "
                     f"{', '.join(r['better'])} | {', '.join(r['worse'])} | {', '.join(r['worse_quality'])} | "
                     f"{'yes' if r['beats_cfg'] else 'no'} |")
    return "\n".join(lines) + "\n"


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---- output --------------------------------------------------------------------------------------


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curve_plots(out: Path, points: dict, names: list[str], grid) -> list[Path]:
    """Phase 1's curves: all-correct and relation against w, and all-correct against NFE."""
    plt = _pyplot()
    paths = []
    for attr, fname in (("all", "adherence_vs_w.png"), ("relation", "relation_vs_w.png")):
        fig, ax = plt.subplots(figsize=(9, 6))
        for name in names:
            ps = [points[(name, w)] for w in grid]
            y = np.array([p[attr] for p in ps])
            err = np.array([[p[attr] - p[f"{attr}_low"] for p in ps], [p[f"{attr}_high"] - p[attr] for p in ps]])
            style = "--" if name.startswith("answer") else "-"
            ax.errorbar(grid, y, yerr=err, label=name, capsize=2, linestyle=style, marker="o", markersize=3)
        label = "all-correct" if attr == "all" else "relation (relational prompts)"
        ax.set(xscale="log", xlabel="guidance scale w", ylabel=f"{label}, validation, 95% CI",
               title=f"Toy world: {label} vs guidance scale (exploratory)")
        ax.set_xticks(grid, [f"{w:g}" for w in grid])
        ax.minorticks_off()
        ax.legend(fontsize=6, ncol=2)
        paths.append(out / fname)
        fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(8, 6))
    for name in names:
        p = points[(name, best_w(points, name, grid))]
        ax.errorbar(p["nfe"], p["all"], yerr=[[p["all"] - p["all_low"]], [p["all_high"] - p["all"]]], marker="o", capsize=2)
        ax.annotate(name, (p["nfe"], p["all"]), fontsize=6)
    ax.set(xlabel="NFE per image", ylabel="all-correct at the best w (validation, 95% CI)",
           title="Toy world: adherence vs cost (exploratory)")
    paths.append(out / "adherence_vs_nfe.png")
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return paths


def difference_plot(path: Path, tests: list[dict]) -> None:
    """Phase 2: each candidate's paired difference to CFG per attribute, with its 95% interval."""
    plt = _pyplot()
    names = list(dict.fromkeys(r["variant"] for r in tests))
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, name in enumerate(names):
        rs = [r for r in tests if r["variant"] == name]
        x = np.arange(len(rs)) + (i - (len(names) - 1) / 2) * 0.2
        d = np.array([r["diff"] for r in rs])
        err = np.array([d - [r["diff_low"] for r in rs], [r["diff_high"] for r in rs] - d])
        ax.errorbar(x, d, yerr=err, fmt="o", capsize=3, label=f"{name} (w={rs[0]['w']:g})")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(ATTRS_CONFIRM)), ATTRS_CONFIRM)
    ax.set(ylabel="candidate - CFG (paired, 95% bootstrap CI)", title="Confirmatory phase: difference to CFG")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def explore_markdown(points: dict, names: list[str], grid, sel: dict, n_val: int, steps: int, minutes: float) -> str:
    best = sel["best_w"]
    lines = [f"Exploratory phase: {n_val} validation prompt x seed samples per (variant, w), {steps} steps, "
             f"w in {', '.join(f'{w:g}' for w in grid)}; each variant at its best w (highest validation all-correct; "
             f"95% Wilson intervals). Time: {minutes:.0f} min. Candidates for the confirmation: "
             f"{', '.join(sel['candidates']) or 'none'}.", "",
             "| variant | best w | NFE | all-correct | relation | shape | colour | count | quality worse than CFG |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n in sorted(names, key=lambda n: -points[(n, best[n])]["all"]):
        p = points[(n, best[n])]
        cells = [f"{p[a]:.3f} [{p[f'{a}_low']:.2f}, {p[f'{a}_high']:.2f}]" for a in ("all", "relation", "shape", "colour", "count")]
        lines.append(f"| {n} | {best[n]:g} | {p['nfe']} | {' | '.join(cells)} | {', '.join(sel['worse_quality'].get(n, []))} |")
    return "\n".join(lines) + "\n"


def confirm_markdown(tests: list[dict], n: int, steps: int, minutes: float) -> str:
    lines = [f"Confirmatory phase: {n} fresh held-out prompt x seed samples (prompt seed {CONFIRM_PROMPT_SEED}, sample "
             f"seeds {CONFIRM_SEED0} + i), {steps} steps; each candidate at its validation-best w against CFG at its "
             f"validation-best w on the same samples. Rates with 95% Wilson intervals; difference with a 95% paired-"
             f"bootstrap interval; exact McNemar p, Holm over all {len(tests)} comparisons. Time: {minutes:.0f} min.", "",
             "| candidate | attribute | n | candidate | CFG | difference [95% CI] | discordant (cand./CFG) | p | Holm p |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in tests:
        lines.append(f"| {r['variant']} (w={r['w']:g}, NFE {r['nfe']}) | {r['attribute']} | {r['n']} | "
                     f"{r['rate']:.3f} [{r['rate_low']:.3f}, {r['rate_high']:.3f}] | "
                     f"{r['cfg_rate']:.3f} [{r['cfg_rate_low']:.3f}, {r['cfg_rate_high']:.3f}] | "
                     f"{r['diff']:+.3f} [{r['diff_low']:+.3f}, {r['diff_high']:+.3f}] | {r['only_variant']}/{r['only_cfg']} | "
                     f"{r['p']:.3g} | {r['holm_p']:.3g} |")
    return "\n".join(lines) + "\n"


# ---- the phases ----------------------------------------------------------------------------------


def explore(args, names: list[str], grid) -> int:
    from dnp_batch.toyworld.data import prompts
    from dnp_batch.toyworld.train import VALIDATION_PROMPT_SEED

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    texts = prompts(args.n_val, VALIDATION_PROMPT_SEED)
    jobs = [(n, w, "val", texts, list(range(args.n_val)), args.steps) for n in names for w in grid]
    rows = run_jobs(jobs, args.model, args.workers)
    val_rows = {(n, w): [r for r in rows if (r["variant"], r["w"]) == (n, w)] for n in names for w in grid}
    points = {key: point_summary(rs) for key, rs in val_rows.items()}
    sel = select_candidates(points, val_rows, names, grid)
    minutes = (time.perf_counter() - t0) / 60
    write_csv(out / "samples.csv", rows)
    write_csv(out / "points.csv", [{"variant": n, "w": w, **p} for (n, w), p in points.items()])
    (out / "candidates.json").write_text(json.dumps({**sel, "model": str(Path(args.model).resolve()), "steps": args.steps,
                                                     "n_val": args.n_val, "grid": list(grid)}, indent=1) + "\n")
    curve_plots(out, points, names, grid)
    text = explore_markdown(points, names, grid, sel, args.n_val, args.steps, minutes)
    (out / "summary.md").write_text(text)
    print(text)
    print(f"written {out}/(samples.csv, points.csv, candidates.json, summary.md, *.png) in {minutes:.1f} min")
    return 0


def phase_one(args) -> dict:
    """Phase 1's candidates.json in --out, checked against this call's --steps and --model."""
    src = Path(args.out)
    if not (src / "candidates.json").is_file():
        sys.exit(f"fidelity {args.phase}: no {src}/candidates.json; run `python bench/fidelity.py explore --out {src}` first")
    sel = json.loads((src / "candidates.json").read_text())
    if sel["steps"] != args.steps:
        sys.exit(f"fidelity {args.phase}: --steps {args.steps}, but phase 1 in {src} chose at {sel['steps']} steps; "
                 f"give --steps {sel['steps']}")
    if sel["model"] != str(Path(args.model).resolve()):
        sys.exit(f"fidelity {args.phase}: --model {args.model}, but phase 1 in {src} chose on {sel['model']}; give that model")
    return sel


def confirm(args) -> int:
    from dnp_batch.toyworld.data import prompts

    src = Path(args.out)
    sel = phase_one(args)
    # --quick is a smoke slice, not a study: it confirms every variant it explored, whatever the rule chose
    candidates = [n for n in sel["best_w"] if n != "cfg"] if args.quick else sel["candidates"]
    best, names = sel["best_w"], ["cfg", *candidates]
    out = src / "confirm"
    out.mkdir(parents=True, exist_ok=True)
    if not candidates:
        decision = (f"Default by the rule: **cfg** at w = {best['cfg']:g}. Phase 1 found no eligible candidate "
                    f"(every variant was worse than CFG on a quality proxy), so there is nothing to confirm.\n")
        (out / "verdict.md").write_text(decision)
        print(decision)
        return 0
    t0 = time.perf_counter()
    n = args.n_confirm
    texts = prompts(n, CONFIRM_PROMPT_SEED)
    seeds = [CONFIRM_SEED0 + i for i in range(n)]
    jobs = [(name, best[name], "confirm", texts[i:i + CHUNK], seeds[i:i + CHUNK], args.steps)
            for name in names for i in range(0, n, CHUNK)]
    rows = run_jobs(jobs, args.model, args.workers)
    return write_confirmation(out, {name: [r for r in rows if r["variant"] == name] for name in names}, best, n,
                              args.steps, t0)


def write_confirmation(out: Path, rows: dict[str, list[dict]], best: dict[str, float], n: int, steps: int,
                       t0: float) -> int:
    """A confirmatory analysis's tests (CFG first in `rows`), its files in `out`, and the verdict."""
    tests = confirm_tests(rows, best)
    minutes = (time.perf_counter() - t0) / 60
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "samples.csv", [r for rs in rows.values() for r in rs])
    write_csv(out / "tests.csv", tests)
    difference_plot(out / "differences.png", tests)
    text = confirm_markdown(tests, n, steps, minutes)
    (out / "summary.md").write_text(text)
    decision = verdict_markdown(verdict(read_csv(out / "tests.csv")))
    (out / "verdict.md").write_text(decision)
    print(text + "\n" + decision)
    print(f"written {out}/(samples.csv, tests.csv, summary.md, verdict.md, differences.png) in {minutes:.1f} min")
    return 0


def _sample_row(row: dict) -> dict:
    """A samples.csv row with the types `run_point` gives (the CSV holds text)."""
    out = dict(row)
    out["w"], out["seed"], out["nfe"] = float(row["w"]), int(row["seed"]), int(row["nfe"])
    for key in (*ATTRS, *QUALITY, "seconds"):
        out[key] = float(row[key])
    return out


def confirm_amended(args) -> int:
    """The amendment (module docstring): the secondary confirmatory analysis on phase 2's samples."""
    from dnp_batch.toyworld.data import prompts

    src = Path(args.out)
    sel = phase_one(args)
    best = sel["best_w"]
    names = [n for n, _, _ in variants() if n in best]
    points = {(r["variant"], float(r["w"])): {"all": float(r["all"]), "nfe": int(r["nfe"])}
              for r in read_csv(src / "points.csv")}
    candidates = select_amended(points, names, best)
    n = args.n_confirm
    texts = prompts(n, CONFIRM_PROMPT_SEED)
    seeds = [CONFIRM_SEED0 + i for i in range(n)]
    done = src / "confirm" / "samples.csv"
    reused = {}
    if done.is_file():
        for row in map(_sample_row, read_csv(done)):
            reused.setdefault(row["variant"], []).append(row)
    rows, todo = {}, []
    for name in ["cfg", *candidates]:
        old = reused.get(name, [])
        if [(r["prompt"], r["seed"], r["w"]) for r in old] == [(t, s, best[name]) for t, s in zip(texts, seeds)]:
            rows[name] = old
        else:
            todo.append(name)
    print(f"amendment: candidates {', '.join(candidates)}; reused from phase 2: {', '.join(rows) or 'none'}; "
          f"generating: {', '.join(todo) or 'none'}", flush=True)
    t0 = time.perf_counter()
    jobs = [(name, best[name], "confirm", texts[i:i + CHUNK], seeds[i:i + CHUNK], args.steps)
            for name in todo for i in range(0, n, CHUNK)]
    fresh = run_jobs(jobs, args.model, args.workers) if jobs else []
    for name in todo:
        rows[name] = [r for r in fresh if r["variant"] == name]
    return write_confirmation(src / "confirm-amended", {name: rows[name] for name in ["cfg", *candidates]}, best, n,
                              args.steps, t0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", nargs="?", choices=("explore", "confirm", "confirm-amended"),
                        help="phase 1 (curves on validation, the candidates), phase 2 (the confirmatory tests) "
                             "or the amendment (module docstring)")
    parser.add_argument("--model", default=str(REPO / "models" / "toy-shapes"))
    parser.add_argument("--out", default=str(REPO / "bench" / "fidelity"), help="phase 1's folder (phase 2 writes OUT/confirm)")
    parser.add_argument("--n-val", type=int, default=64, help="validation samples per (variant, w) point")
    parser.add_argument("--n-confirm", type=int, default=1024, help=f"confirmatory samples per method (>= {MIN_CONFIRM})")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--variants", help="phase 1: a comma-separated subset (cfg is always run)")
    parser.add_argument("--quick", action="store_true", help=f"a small slice: {', '.join(QUICK)}, w in {QUICK_GRID}, "
                                                             "8 samples per point and 8 confirmatory, 4 steps; "
                                                             "confirms every variant of the slice (a smoke run, not a study)")
    parser.add_argument("--verdict", metavar="DIR", help="only apply the confirmatory rule to DIR/tests.csv "
                                                           "(a finished phase 2) and write DIR/verdict.md")
    args = parser.parse_args(argv)
    if args.verdict:
        decision = verdict_markdown(verdict(read_csv(Path(args.verdict) / "tests.csv")))
        (Path(args.verdict) / "verdict.md").write_text(decision)
        print(decision)
        return 0
    if args.phase is None:
        parser.error("give a phase: explore (phase 1), then confirm (phase 2), or --verdict DIR")
    names = [n for n, _, _ in variants()]
    grid = W_GRID
    if args.quick:
        names, grid, args.n_val, args.n_confirm, args.steps = list(QUICK), QUICK_GRID, 8, 8, 4
    elif args.phase in ("confirm", "confirm-amended") and args.n_confirm < MIN_CONFIRM:
        parser.error(f"--n-confirm {args.n_confirm}: the confirmation needs at least {MIN_CONFIRM} samples")
    if args.variants:
        wanted = set(args.variants.split(",")) | {"cfg"}
        unknown = wanted - set(names)
        if unknown:
            parser.error(f"unknown variants {sorted(unknown)}; known: {', '.join(names)}")
        names = [n for n in names if n in wanted]
    if args.phase == "confirm-amended":
        return confirm_amended(args)
    return explore(args, names, grid) if args.phase == "explore" else confirm(args)


if __name__ == "__main__":
    sys.exit(main())
