"""Does the layout follow the words? Same seeds, prompts that swap the two objects' roles.

For a relational prompt "A <rel> B" and its role swap "B <rel> A" (`--kind roles`), or the same
objects under the opposite relation word "A <opposite rel> B" (`--kind relation`), both sampled from
the same seed: a pair *follows the words* when, in both images, the two prompted colours are found
and their order along the relation's axis is the one each prompt asks for (so the pair's order
flipped, as the words say). A model whose layout is decided by the initial noise keeps the order of
the seed (and the same picture: `fg_iou`, the foreground IoU of the two images, near 1).

    python -m dnp_batch.toyworld.layout --model models/toy-shapes --pairs 64 --w 3 [--kind relation]
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from .data import COLOURS, RELATIONS, SHAPES, SWAPPED, Spec, spec_caption
from .judge import colour_labels, detect, to_array

LAYOUT_PROMPT_SEED = 777001  # the layout test's prompts (neither training, validation nor held-out)


KINDS = ("roles", "relation")


def swap_pairs(n: int, seed: int = LAYOUT_PROMPT_SEED, kind: str = "roles") -> list[tuple[str, str, str, str, str]]:
    """`n` (prompt "A rel B", its swap, rel, colour of A, colour of B) with two different colours; the
    swap is "B rel A" (`kind="roles"`) or "A opposite-rel B" (`kind="relation"`). Both ask that B
    stands in `rel` to A in the second image, so they are scored alike. The same objects and
    relations for both kinds."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: give one of {', '.join(KINDS)}")
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        ca, cb = (str(c) for c in rng.choice(COLOURS, size=2, replace=False))
        sa, sb = (str(s) for s in rng.choice(SHAPES, size=2))
        rel = str(rng.choice(list(RELATIONS)))
        swap = Spec(((cb, sb), (ca, sa)), rel) if kind == "roles" else Spec(((ca, sa), (cb, sb)), SWAPPED[rel])
        out.append((spec_caption(Spec(((ca, sa), (cb, sb)), rel)), spec_caption(swap), rel, ca, cb))
    return out


def _order(image, first: str, second: str, relation: str) -> bool | None:
    """Whether `first`'s largest object stands in `relation` to `second`'s on that axis
    (None when either colour is not detected)."""
    found = {}
    for d in detect(image):
        found.setdefault(d.colour, d)
    if first not in found or second not in found:
        return None
    a, b = found[first], found[second]
    dx, dy = b.cx - a.cx, b.cy - a.cy
    return {"left": dx > 0, "right": dx < 0, "above": dy > 0, "below": dy < 0}[relation]


def foreground_iou(a, b) -> float:
    fa, fb = colour_labels(to_array(a)) >= 0, colour_labels(to_array(b)) >= 0
    union = (fa | fb).sum()
    return float((fa & fb).sum() / union) if union else math.nan


def score_pairs(images_a, images_b, pairs) -> dict:
    """The layout test's numbers for generated images of `pairs` (see the module docstring)."""
    follows, judged, ious = 0, 0, []
    for ia, ib, (_, _, rel, ca, cb) in zip(images_a, images_b, pairs, strict=True):
        ious.append(foreground_iou(ia, ib))
        oa, ob = _order(ia, ca, cb, rel), _order(ib, cb, ca, rel)
        if oa is None or ob is None:
            continue
        judged += 1
        follows += bool(oa and ob)
    return {"pairs": len(pairs), "judged": judged, "follows": follows,
            "follows_rate": follows / judged if judged else math.nan,
            "follows_rate_all": follows / len(pairs) if pairs else math.nan,
            "fg_iou": float(np.nanmean(ious)) if ious else math.nan}


def layout_test(pipe, n: int = 64, w: float = 3.0, steps: int = 20, seed0: int = 0, batch_size: int = 64,
                kind: str = "roles") -> dict:
    """Sample every pair's two prompts from the same seeds (`seed0 + i`) with CFG at `w`."""
    from ..api import generate
    from ..runtime import quiet_progress_bars

    pairs = swap_pairs(n, kind=kind)
    seeds = list(range(seed0, seed0 + n))
    with quiet_progress_bars():
        kw = dict(guidance_scale=w, num_inference_steps=steps, height=32, width=32, batch_size=batch_size)
        a = generate(pipe, [p[0] for p in pairs], seeds, method="cfg", **kw).images
        b = generate(pipe, [p[1] for p in pairs], seeds, method="cfg", **kw).images
    return score_pairs(a, b, pairs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dnp_batch.toyworld.layout", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--w", type=float, default=3.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--kind", choices=KINDS, default="roles", help="swap the objects' roles, or the relation word")
    args = parser.parse_args(argv)
    from ..models import load_pipeline

    print(json.dumps(layout_test(load_pipeline(args.model), args.pairs, args.w, args.steps, kind=args.kind), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
