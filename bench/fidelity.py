"""Does ANSWER (or DNP) beat CFG? Every method over its guidance range in the toy world, judged exactly.

    python bench/fidelity.py                          # the full study -> bench/fidelity/
    python bench/fidelity.py --quick --out /tmp/fq    # a small slice (CI runs it)

The protocol, fixed before any result of it was seen:
1. Curves: every variant (METHODS below: CFG, CFG + rescale, APG, NP with a generic negative,
   auto-DNP and CNP with the exact judge as captioner, ANSWER and its variants) at every w of
   W_GRID on `--n-val` validation prompts (`toyworld.train.VALIDATION_PROMPT_SEED`; sample i has
   seed i), each point with 95% Wilson intervals and its measured NFE.
2. Each variant's best w: the highest all-correct on the validation prompts (ties: smaller w).
3. The test, on `--n-test` held-out prompts (`toyworld.evaluate.HELDOUT_PROMPT_SEED`, never used to
   choose anything): every variant at its best w against CFG at its best w on the same prompt ×
   seed samples: exact McNemar p-values (all-correct; relation on relation prompts), the paired
   difference with a 95% paired-bootstrap interval, and the exact image-quality proxy
   (`toyworld.judge.quality`: palette error, background error, stray pixels) beside it.
Samples run in `--workers` processes of one torch thread each, in fixed batches, so every number
is the same whichever worker draws it. Written to --out: samples.csv (every sample), points.csv
(every point), paired.csv, summary.md, verdict.md (the decision rule of `verdict()`, also run alone
by `--verdict DIR`) and three plots (adherence vs w, adherence vs NFE, quality vs adherence).
"""

from __future__ import annotations

import argparse
import csv
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
QUALITY = ("palette_error", "background_error", "stray_pixels")
BATCH = 16
CHUNK = 4 * BATCH  # held-out samples per job
BOOTSTRAP = 2000


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


QUICK = ("cfg", "apg-eta0-m-0.5", "answer-lambda1")
QUICK_GRID = (2.0, 5.0)


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
    return max(grid, key=lambda w: (points[(name, w, "val")]["all"], -w))


def paired_table(test_rows: dict[str, list[dict]], best: dict[str, float]) -> list[dict]:
    """Every variant at its best w against CFG at its best w, on the same held-out samples."""
    base = test_rows["cfg"]
    table = []
    for name, rows in test_rows.items():
        row = {"variant": name, "w": best[name], "cfg_w": best["cfg"], "nfe": rows[0]["nfe"]}
        for attr in ("all", "relation"):
            a = np.array([r[attr] for r in rows], dtype=float)
            b = np.array([r[attr] for r in base], dtype=float)
            keep = ~(np.isnan(a) | np.isnan(b))
            row[attr] = float(a[keep].mean())
            row[f"cfg_{attr}"] = float(b[keep].mean())
            row[f"{attr}_diff"] = float((a[keep] - b[keep]).mean())
            row[f"{attr}_diff_low"], row[f"{attr}_diff_high"] = paired_bootstrap(a, b)
            row[f"{attr}_p"] = mcnemar_p(a[keep], b[keep]) if name != "cfg" else 1.0
            row[f"{attr}_n"] = int(keep.sum())
        for q in QUALITY:
            a = np.array([r[q] for r in rows], dtype=float)
            b = np.array([r[q] for r in base], dtype=float)
            row[q] = float(np.nanmean(a))
            row[f"{q}_diff_low"], row[f"{q}_diff_high"] = paired_bootstrap(a, b)
        table.append(row)
    return table


# ---- the verdict (rule fixed before the full study's results were seen) --------------------------

ALPHA = 0.05


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone), for the family of tests given."""
    order = sorted(pvalues, key=pvalues.get)
    adjusted, running = {}, 0.0
    for i, name in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * pvalues[name]))
        adjusted[name] = running
    return adjusted


def verdict(paired: list[dict]) -> dict:
    """Apply the decision rule to the held-out paired table (each variant at its best w vs CFG at its):
    1. a variant is worse than CFG on quality if, for any proxy in QUALITY (lower is better), the 95%
       paired-bootstrap interval of (variant − CFG) lies wholly above 0; such variants are not eligible;
    2. a variant beats CFG significantly if its all-correct difference is positive and its exact
       McNemar p, Holm-adjusted over every variant-vs-CFG test of the study, is below ALPHA;
    3. the default: if an eligible ANSWER variant beats CFG significantly, the best of those (highest
       held-out all-correct); otherwise the eligible variant with the highest held-out all-correct
       (ties: fewer NFE, then CFG) — "the best method measured", significant or not."""
    by = {r["variant"]: r for r in paired}
    adjusted = holm({n: float(r["all_p"]) for n, r in by.items() if n != "cfg"})
    rows = []
    for name, r in by.items():
        worse = [q for q in QUALITY if float(r[f"{q}_diff_low"]) > 0] if name != "cfg" else []
        beats = name != "cfg" and float(r["all_diff"]) > 0 and adjusted[name] < ALPHA
        loses = name != "cfg" and float(r["all_diff"]) < 0 and adjusted[name] < ALPHA
        rows.append({"variant": name, "w": float(r["w"]), "nfe": int(r["nfe"]), "all": float(r["all"]),
                     "holm_p": adjusted.get(name, 1.0), "beats_cfg": beats, "loses_to_cfg": loses,
                     "worse_quality": worse, "eligible": not worse})
    eligible = [r for r in rows if r["eligible"]]
    answer_wins = [r for r in eligible if r["beats_cfg"] and r["variant"].startswith("answer")]
    pool = answer_wins or eligible
    best = max(pool, key=lambda r: (r["all"], -r["nfe"], r["variant"] == "cfg"))
    return {"rows": rows, "default": best, "answer_beats_cfg": bool(answer_wins),
            "any_beats_cfg": any(r["beats_cfg"] for r in rows)}


def verdict_markdown(v: dict) -> str:
    d = v["default"]
    lines = [f"Default by the rule: **{d['variant']}** at w = {d['w']:g} (held-out all-correct {d['all']:.3f}). "
             + ("An ANSWER variant beats CFG significantly." if v["answer_beats_cfg"] else
                "No ANSWER variant beats CFG significantly (Holm-adjusted exact McNemar, α = 0.05)."), "",
             "| variant | w | all-correct | Holm p | beats CFG | loses to CFG | worse quality than CFG |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(v["rows"], key=lambda r: -r["all"]):
        lines.append(f"| {r['variant']} | {r['w']:g} | {r['all']:.3f} | {r['holm_p']:.3g} | "
                     f"{'yes' if r['beats_cfg'] else ''} | {'yes' if r['loses_to_cfg'] else ''} | "
                     f"{', '.join(r['worse_quality'])} |")
    return "\n".join(lines) + "\n"


def read_paired(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---- output --------------------------------------------------------------------------------------


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plots(out: Path, points: dict, names: list[str], grid, paired: list[dict]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(9, 6))
    for name in names:
        ps = [points[(name, w, "val")] for w in grid]
        y = np.array([p["all"] for p in ps])
        err = np.array([[p["all"] - p["all_low"] for p in ps], [p["all_high"] - p["all"] for p in ps]])
        style = "-" if name in ("cfg", "apg") or not name.startswith("answer") else "--"
        ax.errorbar(grid, y, yerr=err, label=name, capsize=2, linestyle=style, marker="o", markersize=3)
    ax.set(xscale="log", xlabel="guidance scale w", ylabel="all-correct (validation, 95% CI)",
           title="Toy world: adherence vs guidance scale")
    ax.set_xticks(grid, [f"{w:g}" for w in grid])
    ax.minorticks_off()
    ax.legend(fontsize=6, ncol=2)
    paths.append(out / "adherence_vs_w.png")
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)

    for fname, xkey, xlabel in (("adherence_vs_nfe.png", "nfe", "NFE per image"),
                                ("quality_vs_adherence.png", "stray_pixels", "stray pixels per image (lower is better)")):
        fig, ax = plt.subplots(figsize=(8, 6))
        for row in paired:
            err = [[row["all"] - (row["cfg_all"] + row["all_diff_low"])], [(row["cfg_all"] + row["all_diff_high"]) - row["all"]]]
            ax.errorbar(row[xkey], row["all"], yerr=err, marker="o", capsize=2)
            ax.annotate(f"{row['variant']} (w={row['w']:g})", (row[xkey], row["all"]), fontsize=6)
        ax.set(xlabel=xlabel, ylabel="all-correct on held-out prompts at the variant's best w",
               title="Held-out test (interval: paired bootstrap of the difference to CFG, shifted)")
        paths.append(out / fname)
        fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)
    return paths


def summary_markdown(paired: list[dict], n_val: int, n_test: int, steps: int, minutes: float) -> str:
    lines = [f"Held-out test: {n_test} prompt × seed samples per variant, each at its best w on {n_val} validation "
             f"samples, {steps} DDIM steps; paired against CFG at its best w on the same samples "
             f"(exact McNemar p; 95% paired-bootstrap interval of the difference). Study time: {minutes:.0f} min.", "",
             "| variant | w | NFE | all-correct | Δ vs CFG [95% CI] | p | relation | Δ relation [95% CI] | p "
             "| palette err. | stray px |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(paired, key=lambda r: -r["all"]):
        lines.append(
            f"| {r['variant']} | {r['w']:g} | {r['nfe']} | {r['all']:.3f} | {r['all_diff']:+.3f} "
            f"[{r['all_diff_low']:+.3f}, {r['all_diff_high']:+.3f}] | {r['all_p']:.3g} | {r['relation']:.3f} | "
            f"{r['relation_diff']:+.3f} [{r['relation_diff_low']:+.3f}, {r['relation_diff_high']:+.3f}] | "
            f"{r['relation_p']:.3g} | {r['palette_error']:.1f} | {r['stray_pixels']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from dnp_batch.toyworld.data import prompts
    from dnp_batch.toyworld.evaluate import HELDOUT_PROMPT_SEED
    from dnp_batch.toyworld.train import VALIDATION_PROMPT_SEED

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "models" / "toy-shapes"))
    parser.add_argument("--out", default=str(REPO / "bench" / "fidelity"))
    parser.add_argument("--n-val", type=int, default=64, help="validation samples per (variant, w) point")
    parser.add_argument("--n-test", type=int, default=300, help="held-out samples per variant at its best w")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--variants", help="comma-separated subset (cfg is always run)")
    parser.add_argument("--quick", action="store_true", help=f"a small slice: {', '.join(QUICK)}, w in {QUICK_GRID}, "
                                                             "8 + 8 samples, 4 steps")
    parser.add_argument("--verdict", metavar="DIR", help="only apply the decision rule to DIR/paired.csv "
                                                           "(a finished study) and write DIR/verdict.md")
    args = parser.parse_args(argv)
    if args.verdict:
        decision = verdict_markdown(verdict(read_paired(Path(args.verdict) / "paired.csv")))
        (Path(args.verdict) / "verdict.md").write_text(decision)
        print(decision)
        return 0
    names = [n for n, _, _ in variants()]
    grid = W_GRID
    if args.quick:
        names, grid, args.n_val, args.n_test, args.steps = list(QUICK), QUICK_GRID, 8, 8, 4
    if args.variants:
        wanted = set(args.variants.split(",")) | {"cfg"}
        unknown = wanted - set(names)
        if unknown:
            parser.error(f"unknown variants {sorted(unknown)}; known: {', '.join(names)}")
        names = [n for n in names if n in wanted]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    val_texts = prompts(args.n_val, VALIDATION_PROMPT_SEED)
    jobs = [(n, w, "val", val_texts, list(range(args.n_val)), args.steps) for n in names for w in grid]
    rows = run_jobs(jobs, args.model, args.workers)
    points = {(n, w, "val"): point_summary([r for r in rows if (r["variant"], r["w"]) == (n, w)])
              for n in names for w in grid}
    best = {n: best_w(points, n, grid) for n in names}
    print(f"validation done in {(time.perf_counter() - t0) / 60:.1f} min; best w: {best}", flush=True)

    test_texts = prompts(args.n_test, HELDOUT_PROMPT_SEED)
    # in chunks of whole batches, so the workers share the long variants and each batch is the same
    test_jobs = [(n, best[n], "test", test_texts[i:i + CHUNK], list(range(i, min(i + CHUNK, args.n_test))), args.steps)
                 for n in names for i in range(0, args.n_test, CHUNK)]
    test = run_jobs(test_jobs, args.model, args.workers)
    rows += test
    for n in names:
        points[(n, best[n], "test")] = point_summary([r for r in test if r["variant"] == n])
    paired = paired_table({n: [r for r in test if r["variant"] == n] for n in names}, best)
    minutes = (time.perf_counter() - t0) / 60

    write_csv(out / "samples.csv", rows)
    write_csv(out / "points.csv", [{"variant": n, "w": w, "split": s, **p} for (n, w, s), p in points.items()])
    write_csv(out / "paired.csv", paired)
    plots(out, points, names, grid, paired)
    text = summary_markdown(paired, args.n_val, args.n_test, args.steps, minutes)
    (out / "summary.md").write_text(text)
    print(text)
    decision = verdict_markdown(verdict(read_paired(out / "paired.csv")))
    (out / "verdict.md").write_text(decision)
    print(decision)
    print(f"written {out}/(samples.csv, points.csv, paired.csv, summary.md, *.png) in {minutes:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
