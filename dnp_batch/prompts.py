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
