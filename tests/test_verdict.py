"""The study's rules (bench/fidelity.py): phase 1's candidate selection and phase 2's verdict, on
made-up samples and test tables."""

import importlib.util

import numpy as np
import pytest

from jobutil import REPO

spec = importlib.util.spec_from_file_location("fidelity", REPO / "bench" / "fidelity.py")
fidelity = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fidelity)


def test_holm_adjusts_step_down_and_stays_monotone():
    assert fidelity.holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})


def samples(name, w, all_rate, n=64, stray=0.0, nfe=40, seed=0):
    """n made-up judged samples: all-correct in the first all_rate * n, every other attribute right."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        ok = float(i < round(all_rate * n))
        rows.append({"variant": name, "w": w, "prompt": f"p{i}", "seed": i, "nfe": nfe, "seconds": 0.1, "shape": 1.0,
                     "colour": 1.0, "count": 1.0, "relation": ok if i % 2 else float("nan"), "all": ok,
                     "palette_error": 1.0, "background_error": 1.0, "stray_pixels": stray + rng.uniform(0, 0.1)})
    return rows


def explored(table, grid=(2.0, 5.0)):
    """points and val_rows of a phase 1 from {name: {w: (all_rate, stray, nfe)}}."""
    val_rows = {(n, w): samples(n, w, table[n][w][0], stray=table[n][w][1], nfe=table[n][w][2]) for n in table for w in grid}
    return {k: fidelity.point_summary(v) for k, v in val_rows.items()}, val_rows, list(table), grid


def test_selection_takes_one_per_slot_at_each_best_w_and_drops_worse_quality():
    table = {"cfg": {2.0: (0.5, 0, 40), 5.0: (0.4, 0, 40)},
             "apg": {2.0: (0.7, 5, 40), 5.0: (0.8, 5, 40)},  # best of all, but worse on stray pixels
             "np-generic": {2.0: (0.45, 0, 40), 5.0: (0.45, 0, 40)},  # tie: the smaller w
             "auto-dnp": {2.0: (0.3, 0, 80), 5.0: (0.55, 0, 80)},
             "answer-a": {2.0: (0.6, 0, 80), 5.0: (0.5, 0, 80)},
             "answer-b": {2.0: (0.6, 0, 60), 5.0: (0.2, 0, 60)}}  # ties answer-a: fewer NFE wins
    sel = fidelity.select_candidates(*explored(table))
    assert sel["best_w"] == {"cfg": 2.0, "apg": 5.0, "np-generic": 2.0, "auto-dnp": 5.0, "answer-a": 2.0, "answer-b": 2.0}
    assert sel["worse_quality"]["apg"] == ["stray_pixels"] and "apg" not in sel["eligible"]
    assert sel["candidates"] == ["answer-b", "auto-dnp", "np-generic"]


def test_selection_leaves_a_slot_empty_when_no_variant_of_it_is_eligible():
    table = {"cfg": {2.0: (0.5, 0, 40)}, "answer-a": {2.0: (0.9, 5, 80)}, "auto-dnp": {2.0: (0.4, 0, 80)}}
    assert fidelity.select_candidates(*explored(table, (2.0,)))["candidates"] == ["auto-dnp"]


def test_the_amendment_takes_the_best_of_each_slot_whatever_its_validation_quality():
    """bench/fidelity.py's amendment: the answer and dnp slots only (the other slot is phase 2's), and
    quality is the verdict's guard only, so answer-a is selected where phase 1's rule dropped it."""
    table = {"cfg": {2.0: (0.5, 0, 40), 5.0: (0.4, 0, 40)},
             "apg": {2.0: (0.7, 5, 40), 5.0: (0.8, 5, 40)},
             "np-generic": {2.0: (0.45, 0, 40), 5.0: (0.45, 0, 40)},
             "auto-dnp": {2.0: (0.3, 0, 80), 5.0: (0.55, 0, 80)},
             "answer-a": {2.0: (0.6, 0, 80), 5.0: (0.5, 0, 80)},
             "answer-b": {2.0: (0.6, 0, 60), 5.0: (0.2, 0, 60)}}
    points, val_rows, names, grid = explored(table)
    best = fidelity.select_candidates(points, val_rows, names, grid)["best_w"]
    assert fidelity.select_amended(points, names, best) == ["answer-b", "auto-dnp"]
    table = {"cfg": {2.0: (0.5, 0, 40)}, "answer-a": {2.0: (0.9, 5, 80)}, "auto-dnp": {2.0: (0.4, 0, 80)}}
    points, _, names, _ = explored(table, (2.0,))
    assert fidelity.select_amended(points, names, {n: 2.0 for n in names}) == ["answer-a", "auto-dnp"]


def table_of(diffs, quality=""):
    """confirm_tests-like rows for one candidate from {attribute: (diff, holm_p)}."""
    return [{"variant": "answer-x", "w": 3.0, "cfg_w": 2.0, "nfe": 80, "cfg_nfe": 40, "attribute": a,
             "rate": 0.5 + diffs.get(a, (0, 1))[0], "diff": diffs.get(a, (0, 1))[0], "holm_p": diffs.get(a, (0, 1))[1],
             "worse_quality": quality} for a in fidelity.ATTRS_CONFIRM]


def test_a_significant_relation_gain_beats_cfg_and_sets_the_default():
    v = fidelity.verdict(table_of({"relation": (0.1, 0.001)}))
    assert v["answer_beats_cfg"] and v["default"]["variant"] == "answer-x" and v["rows"][0]["better"] == ["relation"]


@pytest.mark.parametrize("diffs, quality", [({"relation": (0.1, 0.001), "colour": (-0.05, 0.01)}, ""),  # a loss elsewhere
                                            ({"all": (0.1, 0.001)}, "stray_pixels"),  # worse quality
                                            ({"relation": (0.1, 0.06)}, ""),  # not significant after Holm
                                            ({"shape": (0.1, 0.001)}, "")])  # neither relation nor all-correct
def test_without_a_clean_win_the_default_stays_cfg(diffs, quality):
    v = fidelity.verdict(table_of(diffs, quality))
    assert not v["any_beats_cfg"] and v["default"] == {"variant": "cfg", "w": 2.0, "nfe": 40}


def test_confirm_tests_pair_the_samples_and_holm_adjusts_over_the_whole_phase():
    cfg = samples("cfg", 2.0, 0.5, n=200)
    better = samples("answer-x", 3.0, 0.7, n=200, nfe=80)
    same = samples("apg", 5.0, 0.5, n=200)
    tests = fidelity.confirm_tests({"cfg": cfg, "answer-x": better, "apg": same}, {"cfg": 2.0, "answer-x": 3.0, "apg": 5.0})
    assert len(tests) == 2 * 5 and [r["attribute"] for r in tests[:5]] == list(fidelity.ATTRS_CONFIRM)
    rel = next(r for r in tests if (r["variant"], r["attribute"]) == ("answer-x", "relation"))
    assert rel["n"] == 100 and rel["only_variant"] == 20 and rel["only_cfg"] == 0 and rel["diff"] == pytest.approx(0.2)
    assert rel["p"] == pytest.approx(2 * 0.5 ** 20)
    assert rel["holm_p"] == pytest.approx(9 * rel["p"])  # the second smallest of 10 (all-correct, 40 discordant, is first)
    assert fidelity.verdict(tests)["default"]["variant"] == "answer-x"
