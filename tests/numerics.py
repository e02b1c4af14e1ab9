"""The numeric tests' tolerances, each with what it bounds and how it was measured, and the one
comparison they go through (which can log every observed difference for `bench/tolerances.py`).

Measured by `python bench/tolerances.py` (its output: bench/results/tolerances-cpu.txt): the
numeric test files (sampler, answer, dnp, methods, guidance, scorers, toy world: 168 tests) run
under OMP_NUM_THREADS=1 and 2 and ATEN_CPU_CAPABILITY=default and the machine's best (avx2 on the
2-core AMD EPYC here; avx512 where a CPU has it); every comparison's largest |difference| is
logged. A tolerance is the worst case over those settings times a margin of at least 5, so a
machine whose kernels block a little differently still passes, while a real error (a wrong seed,
a swapped negative, a skipped step: differences of the order of the latents themselves, 1–40
here) still fails. (The `atol` column of that file shows the bounds in force when it ran: 1e-3,
1e-3 and 1e-5; the values below follow from its worst differences.)
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

# Same inputs, different batch composition (a sample alone or beside others, in another order):
# float32 GEMM/convolution kernels block their sums by batch size, so each UNet call rounds
# differently, and a 5–6 step chain carries that on; ancestral samplers (euler_a) amplify it most.
# Worst measured: 2.8e-4 (tiny SD, euler_a, ANSWER mixed batch vs one by one, one thread, default
# SIMD; latents up to 37 in magnitude); 2.2e-4 for a swapped batch order; 1.6e-4 was seen on
# another 2-core machine. Margin 7.
BATCH_TOL = 2e-3
# Two algebraically equal forms of one update, same batch: ANSWER's λ = w - 1 against the paper's
# step 3, APG (eta 1, no clip) against CFG: different float32 expressions of the same numbers over
# a 5–6 step chain. Worst measured: 1.4e-5 (λ form), 8.2e-6 (APG). Margin 7.
FORM_TOL = 1e-4
# Our loop against diffusers' pipeline at the same batch: the loop mirrors the pipeline op for op,
# and the match was exact (difference 0.0) in every comparison and setting measured. Exact it stays.
PIPELINE_TOL = 0.0


def assert_close(got, want, atol: float, what: str = "") -> None:
    """|got - want| <= atol elementwise (tensors or arrays); logs the observed maximum when
    DNP_TOLERANCE_LOG names a file (bench/tolerances.py)."""
    g = got.detach().double().cpu().numpy() if torch.is_tensor(got) else np.asarray(got, dtype=np.float64)
    w = want.detach().double().cpu().numpy() if torch.is_tensor(want) else np.asarray(want, dtype=np.float64)
    assert g.shape == w.shape, f"shapes differ: {g.shape} vs {w.shape}"
    diff = float(np.abs(g - w).max()) if g.size else 0.0
    log = os.environ.get("DNP_TOLERANCE_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps({"test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0], "what": what,
                                "max_abs_diff": diff, "max_abs_value": float(np.abs(w).max()) if w.size else 0.0,
                                "atol": atol}) + "\n")
    assert diff <= atol, f"{what or 'values'}: max |difference| {diff:.3g} > {atol:.3g}"
