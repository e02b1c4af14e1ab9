"""Prompt files in, samples out: one sample per (prompt, seed), each with a stable key."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

_KEY_OK = re.compile(r"^[A-Za-z0-9_-]+$")  # WebDataset keys: no dots, no slashes


@dataclass(frozen=True)
class Sample:
    key: str
    prompt: str
    seed: int
    negative_prompt: str | None = None


def prompt_id(prompt: str) -> str:
    """The id of a prompt without an explicit one: a hash of its text alone."""
    return hashlib.sha1(prompt.encode()).hexdigest()[:12]


def read_prompts(path: str | Path) -> list[dict]:
    """Rows of a JSONL (`{"prompt": ..., "id"?: ..., "negative_prompt"?: ..., "seed"?: ...}`) or TXT
    (one prompt per line) file. Bad input is a ValueError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompts file {path} does not exist")
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if path.suffix.lower() == ".txt":
            rows.append({"prompt": line.strip()})
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} line {n} is not valid JSON ({e.msg}): {line[:80]!r}") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise ValueError(f'{path} line {n}: each line must be an object with a string "prompt"')
        rows.append(row)
    if not rows:
        raise ValueError(f"prompts file {path} holds no prompts")
    return rows


def expand_samples(rows: list[dict], seeds: int) -> list[Sample]:
    """One sample per (row, seed): the row's own `seed` if it has one, else seeds 0..N-1."""
    samples, seen = [], set()
    for row in rows:
        pid = str(row["id"]) if "id" in row else prompt_id(row["prompt"])
        if not _KEY_OK.match(pid):
            raise ValueError(f"prompt id {pid!r} may only hold letters, digits, '_' and '-'")
        row_seeds = [int(row["seed"])] if "seed" in row else range(seeds)
        for seed in row_seeds:
            key = f"{pid}_{seed}"
            if key in seen:
                raise ValueError(f"duplicate sample {key!r}: prompt ids must be unique")
            seen.add(key)
            samples.append(Sample(key, row["prompt"], seed, row.get("negative_prompt")))
    return samples


def read_negatives(path: str | Path, samples: list[Sample]) -> list[Sample]:
    """Human DNP phase two: the samples with the negatives of an edited negatives file
    (`{"id": KEY, "prompt": ..., "negative_prompt": ...}` per line). Its ids must be exactly the
    samples' keys: unknown, missing and duplicate ids are errors."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"negatives file {path} does not exist")
    by_key = {s.key: s for s in samples}
    negatives: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} line {n} is not valid JSON ({e.msg}): {line[:80]!r}") from None
        if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not isinstance(
                row.get("negative_prompt"), str):
            raise ValueError(f'{path} line {n}: each line needs a string "id" and a string "negative_prompt"')
        key = row["id"]
        if key in negatives:
            raise ValueError(f"{path} line {n}: duplicate id {key!r}")
        if key not in by_key:
            raise ValueError(f"{path} line {n}: unknown id {key!r}: no such sample in the prompts file and seeds")
        if "prompt" in row and row["prompt"] != by_key[key].prompt:
            raise ValueError(f"{path} line {n}: id {key!r} has prompt {row['prompt']!r}, but the prompts file "
                             f"says {by_key[key].prompt!r}")
        negatives[key] = row["negative_prompt"]
    missing = [s.key for s in samples if s.key not in negatives]
    if missing:
        raise ValueError(f"negatives file {path} has no line for {len(missing)} sample(s), e.g. {missing[0]!r}")
    return [Sample(s.key, s.prompt, s.seed, negatives[s.key]) for s in samples]
