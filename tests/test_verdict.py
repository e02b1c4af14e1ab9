"""The study's decision rule (bench/fidelity.py `verdict`), on made-up paired tables."""

import importlib.util

import pytest

from jobutil import REPO

spec = importlib.util.spec_from_file_location("fidelity", REPO / "bench" / "fidelity.py")
fidelity = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fidelity)


def test_holm_adjusts_step_down_and_stays_monotone():
    assert fidelity.holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})


def row(name, all_, p, nfe=40, worse=(), w=5.0):
    r = {"variant": name, "w": w, "nfe": nfe, "all": all_, "all_diff": all_ - 0.5, "all_p": p}
    for q in fidelity.QUALITY:
        r[f"{q}_diff_low"] = 0.5 if q in worse else -0.1
    return r


def test_a_significant_answer_variant_becomes_the_default():
    v = fidelity.verdict([row("cfg", 0.5, 1.0), row("answer-x", 0.6, 1e-4, nfe=80), row("apg", 0.65, 0.2)])
    assert v["answer_beats_cfg"] and v["default"]["variant"] == "answer-x"


def test_without_a_significant_answer_win_the_best_eligible_variant_is_the_default():
    table = [row("cfg", 0.5, 1.0), row("answer-x", 0.55, 0.3, nfe=80), row("apg", 0.65, 1e-5, worse=["stray_pixels"]),
             row("np", 0.56, 0.2)]
    v = fidelity.verdict(table)
    assert not v["answer_beats_cfg"] and v["default"]["variant"] == "np"  # apg is worse on quality
    assert next(r for r in v["rows"] if r["variant"] == "apg")["worse_quality"] == ["stray_pixels"]


def test_holm_can_take_away_a_raw_significance():
    table = [row("cfg", 0.5, 1.0)] + [row(f"answer-{i}", 0.52, 0.04) for i in range(5)]
    assert not fidelity.verdict(table)["answer_beats_cfg"]  # 5 tests at p = 0.04: none survives
