"""Toy scenes with exact labels: one or two simple shapes in clearly distinct colours, 32×32.

A scene is drawn from a numpy RNG and rendered deterministically from its own fields (its
background noise has its own seed), so the same seed gives the same bytes. Captions follow a
small grammar, parsed back by `parse_caption`:

    a red circle                                   one object
    two green crosses                              two identical objects (count)
    a blue square to the left of a yellow triangle two objects and a relation
    a green cross above a red square               (left of, right of, above, below)

    >>> rng = np.random.default_rng(0)
    >>> scene = sample_scene(rng); image = render(scene); text = caption(scene)

Geometry (pixel centres at integer coordinates, a shape of size s spans [c - s, c + s] on both
axes): circle (x-cx)²+(y-cy)² <= (s+0.4)²; square |x-cx|, |y-cy| <= s; triangle pointing up,
apex (cx, cy-s), base y = cy+s from cx-s to cx+s; cross (plus sign) with arms of half-width
1 (s <= 7) or 2 (s >= 8). Sizes 5–9 for one object, 5–7 for two; objects keep at least 1 px
from the border and at least 2 px of background between each other; a relation is always
clear on its own axis (the other axis offset is at most half of it).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 32
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 45),
}
COLOURS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
NUMBERS = {"two": 2, "three": 3, "four": 4}  # the parser knows 2–4; scenes have at most 2
# relation key -> words; "objects[0] <words> objects[1]"
RELATIONS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
SWAPPED = {"left": "right", "right": "left", "above": "below", "below": "above"}

SINGLE_SIZES = (5, 9)  # inclusive ranges of the size (radius / half-size)
PAIR_SIZES = (5, 7)
MARGIN = 1  # px of background kept at the border
GAP = 2  # px of background kept between two objects
KIND_WEIGHTS = {"single": 0.35, "two": 0.15, "relation": 0.5}

# All grammar words, so a tokenizer can make each a single token.
WORDS = ("a", "an", "one", *NUMBERS, *COLOURS, *SHAPES, *PLURALS.values(), "to", "the", "left", "right", "of",
         "above", "below")


@dataclass(frozen=True)
class Obj:
    """One shape: its kind, palette colour name, centre (x, y) in pixels and size (radius or half-size)."""

    shape: str
    colour: str
    cx: int
    cy: int
    size: int

    def bbox(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), inclusive."""
        return self.cx - self.size, self.cy - self.size, self.cx + self.size, self.cy + self.size


@dataclass(frozen=True)
class Scene:
    """Exact labels of an image. `relation` ("left", "right", "above", "below" or None) reads
    `objects[0] <relation> objects[1]`; two objects without a relation are identical ("two ...")."""

    objects: tuple[Obj, ...]
    relation: str | None
    background: int  # grey level of the plain background (0 = black)
    noise: float  # std of the Gaussian pixel noise added to the whole image (0 = clean)
    noise_seed: int
    size: int = IMAGE_SIZE

    @property
    def count(self) -> int:
        return len(self.objects)

    def spec(self) -> "Spec":
        return Spec(tuple((o.colour, o.shape) for o in self.objects), self.relation)


@dataclass(frozen=True)
class Spec:
    """What a caption asks for: `objects` as (colour, shape) in caption order, and the relation
    of objects[0] to objects[1] (None when there is none)."""

    objects: tuple[tuple[str, str], ...]
    relation: str | None = None

    @property
    def count(self) -> int:
        return len(self.objects)

    @property
    def shapes(self) -> Counter:
        return Counter(s for _, s in self.objects)

    @property
    def colours(self) -> Counter:
        return Counter(c for c, _ in self.objects)

    def canonical(self) -> "Spec":
        """The same meaning in one form: relations as "left"/"above" (swapping the objects), and
        objects sorted when there is no relation."""
        if self.relation is None:
            return Spec(tuple(sorted(self.objects)), None)
        if self.relation in ("right", "below"):
            return Spec((self.objects[1], self.objects[0]), SWAPPED[self.relation])
        return self


# ---- sampling -------------------------------------------------------------------------------


def _centre(rng: np.random.Generator, size: int) -> tuple[int, int]:
    lo, hi = MARGIN + size, IMAGE_SIZE - 1 - MARGIN - size
    return int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))


def _separated(a: Obj, b: Obj) -> bool:
    """At least GAP px of background between the bounding boxes along one axis."""
    dx = abs(a.cx - b.cx) - a.size - b.size - 1
    dy = abs(a.cy - b.cy) - a.size - b.size - 1
    return max(dx, dy) >= GAP


def _relation_holds(a: Obj, b: Obj, relation: str) -> bool:
    """`a relation b` with a clear margin: the other axis' offset at most half the main one."""
    dx, dy = b.cx - a.cx, b.cy - a.cy  # b relative to a
    main, other = {"left": (dx, dy), "right": (-dx, dy), "above": (dy, dx), "below": (-dy, dx)}[relation]
    return main > 0 and 2 * abs(other) <= main


def _pair(rng, first: tuple[str, str], second: tuple[str, str], relation: str | None) -> tuple[Obj, Obj]:
    """Two objects placed by rejection sampling (a few dozen tries at most in practice)."""
    while True:
        s1, s2 = (int(v) for v in rng.integers(PAIR_SIZES[0], PAIR_SIZES[1] + 1, size=2))
        a = Obj(first[1], first[0], *_centre(rng, s1), s1)
        b = Obj(second[1], second[0], *_centre(rng, s2), s2)
        if _separated(a, b) and (relation is None or _relation_holds(a, b, relation)):
            return a, b


def kind_weights(relation_share: float) -> dict[str, float]:
    """Scene-kind weights with `relation_share` of relation scenes, the rest split between single
    objects and "two X" as in `KIND_WEIGHTS` (so `kind_weights(0.5) == KIND_WEIGHTS`)."""
    rest = KIND_WEIGHTS["single"] + KIND_WEIGHTS["two"]
    return {"single": (1 - relation_share) * KIND_WEIGHTS["single"] / rest,
            "two": (1 - relation_share) * KIND_WEIGHTS["two"] / rest, "relation": relation_share}


def sample_scene(rng: np.random.Generator, weights: dict[str, float] = KIND_WEIGHTS) -> Scene:
    """A random scene: one object, two identical objects, or two different ones in a relation
    (kinds drawn with `weights`; evaluation prompts always use `KIND_WEIGHTS`)."""
    kind = str(rng.choice(list(weights), p=list(weights.values())))
    colour, shape = str(rng.choice(COLOURS)), str(rng.choice(SHAPES))
    if kind == "single":
        s = int(rng.integers(SINGLE_SIZES[0], SINGLE_SIZES[1] + 1))
        objects, relation = (Obj(shape, colour, *_centre(rng, s), s),), None
    elif kind == "two":
        objects, relation = _pair(rng, (colour, shape), (colour, shape), None), None
    else:
        while True:
            other = (str(rng.choice(COLOURS)), str(rng.choice(SHAPES)))
            if other != (colour, shape):
                break
        relation = str(rng.choice(list(RELATIONS)))
        objects = _pair(rng, (colour, shape), other, relation)
    background = 0 if rng.random() < 0.5 else int(rng.integers(20, 61))
    noise = 0.0 if rng.random() < 0.5 else float(np.round(rng.uniform(2.0, 8.0), 2))
    return Scene(tuple(objects), relation, background, noise, int(rng.integers(0, 2**31 - 1)))


# ---- rendering ------------------------------------------------------------------------------


def cross_arm(size: float) -> int:
    """Half-width of a cross's arms for a cross of this size."""
    return 1 if size <= 7.5 else 2


def shape_mask(shape: str, cx: float, cy: float, size: float, n: int = IMAGE_SIZE) -> np.ndarray:
    """Boolean n×n mask of a shape (centres and sizes may be fractional: the judge fits them)."""
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    dx, dy = x - cx, y - cy
    inside_box = (np.abs(dx) <= size + 1e-9) & (np.abs(dy) <= size + 1e-9)
    if shape == "circle":
        return dx**2 + dy**2 <= (size + 0.4) ** 2
    if shape == "square":
        return inside_box
    if shape == "triangle":
        return inside_box & (np.abs(dx) <= (dy + size) / 2 + 0.25)
    if shape == "cross":
        a = cross_arm(size) + 1e-9
        return inside_box & ((np.abs(dx) <= a) | (np.abs(dy) <= a))
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def render(scene: Scene) -> np.ndarray:
    """The scene as an (H, W, 3) uint8 RGB image."""
    n = scene.size
    image = np.full((n, n, 3), float(scene.background))
    for obj in scene.objects:
        image[shape_mask(obj.shape, obj.cx, obj.cy, obj.size, n)] = PALETTE[obj.colour]
    if scene.noise > 0:
        image += np.random.default_rng(scene.noise_seed).normal(0.0, scene.noise, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


# ---- captions -------------------------------------------------------------------------------


def spec_caption(spec: Spec) -> str:
    """The grammar's text for a spec."""
    objs = spec.objects
    if not objs:
        return ""
    if len(objs) == 1:
        return f"a {objs[0][0]} {objs[0][1]}"
    if spec.relation is None:
        if len(set(objs)) != 1:
            raise ValueError(f"objects without a relation must be identical: {objs}")
        words = {v: k for k, v in NUMBERS.items()}
        return f"{words[len(objs)]} {objs[0][0]} {PLURALS[objs[0][1]]}"
    (c1, s1), (c2, s2) = objs
    return f"a {c1} {s1} {RELATIONS[spec.relation]} a {c2} {s2}"


def caption(scene: Scene) -> str:
    """The scene's caption in the grammar."""
    return spec_caption(scene.spec())


_C = "|".join(COLOURS)
_S = "|".join(SHAPES)
_P = "|".join(PLURALS.values())
_R = "|".join(RELATIONS.values())
_ONE = re.compile(rf"(?:a|an|one) ({_C}) ({_S})")
_MANY = re.compile(rf"({'|'.join(NUMBERS)}) ({_C}) ({_P})")
_REL = re.compile(rf"(?:a|an|one) ({_C}) ({_S}) ({_R}) (?:a|an|one) ({_C}) ({_S})")
_SINGULAR = {v: k for k, v in PLURALS.items()}
_RELATION_KEYS = {v: k for k, v in RELATIONS.items()}


def parse_caption(text: str) -> Spec | None:
    """The spec a caption asks for, or None if it is not in the grammar (case, extra spaces and a
    final period are ignored)."""
    t = " ".join(str(text).lower().strip().rstrip(".").split())
    if m := _ONE.fullmatch(t):
        return Spec(((m[1], m[2]),))
    if m := _MANY.fullmatch(t):
        return Spec(((m[2], _SINGULAR[m[3]]),) * NUMBERS[m[1]])
    if m := _REL.fullmatch(t):
        return Spec(((m[1], m[2]), (m[4], m[5])), _RELATION_KEYS[m[3]])
    return None


# ---- datasets -------------------------------------------------------------------------------


def dataset(n: int, seed: int) -> list[tuple[np.ndarray, str, Scene]]:
    """`n` (image, caption, scene) triples from `seed`."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        scene = sample_scene(rng)
        out.append((render(scene), caption(scene), scene))
    return out


def prompts(n: int, seed: int = 1234) -> list[str]:
    """`n` evaluation captions drawn like the training scenes (repeats possible), from `seed`."""
    rng = np.random.default_rng(seed)
    return [caption(sample_scene(rng)) for _ in range(n)]


def all_captions() -> list[str]:
    """Every caption the scene sampler can produce (the grammar's finite language at count <= 2)."""
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    out = [spec_caption(Spec((p,))) for p in pairs]
    out += [spec_caption(Spec((p, p))) for p in pairs]
    out += [spec_caption(Spec((p, q), r)) for p in pairs for q in pairs if p != q for r in RELATIONS]
    return out


__all__ = ["IMAGE_SIZE", "PALETTE", "COLOURS", "SHAPES", "RELATIONS", "WORDS", "Obj", "Scene", "Spec",
           "sample_scene", "render", "shape_mask", "caption", "spec_caption", "parse_caption", "dataset",
           "prompts", "all_captions"]
