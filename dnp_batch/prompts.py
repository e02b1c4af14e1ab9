"""Prompt files in, samples out: one sample per (prompt, seed), each with a stable key.

A prompts file is JSONL, TXT, CSV, TSV or Parquet, local or any fsspec URL (`s3://...`). Each row
becomes `{"prompt", "id"?, "negative_prompt"?, "seed"?, "metadata"}`: every other column or key
(PartiPrompts' Category/Challenge/Note, DrawBench's category) travels in `metadata`.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import json
import math
import numbers
import re
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import fsspec
import pyarrow.parquet as pq

_KEY_OK = re.compile(r"^[A-Za-z0-9_-]+$")  # WebDataset keys: no dots, no slashes
_DIGITS = re.compile(r"[0-9]+")  # not str.isdigit: it takes '²', which int() refuses
FORMATS = (".jsonl", ".txt", ".csv", ".tsv", ".parquet")
MAX_PROMPT_CHARS = 10_000  # far past any text encoder's window (77 tokens): a longer "prompt" is a broken row
MAX_SEED = 2**63 - 1  # seeds are torch generator seeds and Parquet int64s
# Where the prompt lives, first match wins: ours, PartiPrompts' TSV, DrawBench's CSV (both spellings),
# then common caption-dataset names.
PROMPT_COLUMNS = ("prompt", "Prompt", "prompts", "Prompts", "text", "caption")


class SeedsError(ValueError, argparse.ArgumentTypeError):
    """A bad `--seeds`; argparse shows its message when parse_seeds is an argument's `type`."""


@dataclass(frozen=True)
class Sample:
    key: str
    prompt: str
    seed: int
    negative_prompt: str | None = None
    metadata: dict = field(default_factory=dict, hash=False, compare=True)  # the row's other columns


def prompt_id(prompt: str) -> str:
    """The id of a prompt without an explicit one: a hash of its text alone."""
    return hashlib.sha1(prompt.encode()).hexdigest()[:12]


def read_prompts(path: str | Path) -> list[dict]:
    """Rows of a prompts file, chosen by extension: JSONL (`{"prompt": ..., "id"?, "negative_prompt"?,
    "seed"?, ...}` per line), TXT (one prompt per line), CSV, TSV or Parquet (a prompt column named as in
    PROMPT_COLUMNS). Other keys/columns go to `row["metadata"]`. In CSV/TSV/Parquet an empty cell is
    absent; in JSONL a null is. Bad input is a ValueError naming the file and line (or Parquet row)."""
    suffix = _suffix(path)
    if suffix not in FORMATS:
        raise ValueError(f"prompts file {path} has an unknown extension {suffix or '(none)'!r}; "
                         f"use one of {', '.join(FORMATS)}")
    _check_exists(path, "prompts file")
    if suffix == ".parquet":
        rows = _read_parquet(path)
    elif suffix in (".csv", ".tsv"):
        rows = _read_delimited(path, "\t" if suffix == ".tsv" else ",")
    else:
        rows = _read_lines(path, suffix)
    if not rows:
        raise ValueError(f"prompts file {path} holds no prompts")
    return rows


def parse_seeds(text: str) -> int | list[int]:
    """`--seeds`: "4" is the count 4 (seeds 0..3); "0,5,9" is those seeds; "7," is the one seed 7."""
    bad = f"--seeds must be a count N or a comma-separated list of seeds, got {text!r}"
    text = text.strip()
    if "," not in text:
        if not _DIGITS.fullmatch(text) or int(text) < 1:
            raise SeedsError(bad + " (a count is a whole number >= 1)")
        return int(text)
    parts = [p.strip() for p in text.removesuffix(",").split(",")]
    if not all(_DIGITS.fullmatch(p) for p in parts):
        raise SeedsError(bad + " (seeds are whole numbers >= 0)")
    seeds = [int(p) for p in parts]
    if len(set(seeds)) != len(seeds):
        raise SeedsError(bad + " (a seed is listed twice)")
    return seeds


class Samples(list):
    """The samples of a prompt set; `folded` counts the duplicate rows generated only once."""

    folded: int = 0


def expand_samples(rows: list[dict], seeds: int | list[int], source=None) -> Samples:
    """One sample per (row, seed): the row's own `seed` if it has one, else each of `seeds` (a count N
    means 0..N-1). Keys are `{id}_{seed}`, id = the row's `id` or `prompt_id(prompt)`. A sample
    identical to an earlier one (same key, prompt, negative prompt and seed: real prompt sets repeat
    captions) is folded into it, keeping the first row's id and metadata (`.folded` counts them);
    the same key for different content is an error (naming `source`, the prompts file, if given)."""
    default_seeds = _seed_list(seeds)
    samples, first_of = Samples(), {}
    for n, row in enumerate(rows, start=1):
        pid = _check_id(str(row["id"]), f"prompt #{n}") if row.get("id") is not None else prompt_id(row["prompt"])
        own = row.get("seed")
        for seed in [_seed(own, f"prompt #{n}")] if own is not None else default_seeds:
            key = f"{pid}_{seed}"
            if key in first_of:
                first, sample = first_of[key]
                if (sample.prompt, sample.negative_prompt) == (row["prompt"], row.get("negative_prompt")):
                    samples.folded += 1
                    continue
                where = f"prompts file {source}: " if source is not None else ""
                raise ValueError(f"{where}duplicate sample {key!r} (prompts #{first} and #{n}) with different content: "
                                 f"prompt ids must be unique; give rows with the same text distinct ids")
            metadata = dict(row.get("metadata") or {})
            sample = Sample(key, row["prompt"], seed, row.get("negative_prompt"), metadata)
            first_of[key] = (n, sample)
            samples.append(sample)
    return samples


def folded_note(samples: Samples) -> str | None:
    """The job's line about folded duplicates, or None when there were none."""
    if not getattr(samples, "folded", 0):
        return None
    return (f"prompts: {samples.folded} duplicate row(s) folded (same id or text, negative prompt and seed: "
            f"generated once, with the first row's id and metadata); {len(samples)} samples")


def read_negatives(path: str | Path, samples: list[Sample]) -> list[Sample]:
    """Human DNP phase two: the samples with the negatives of an edited negatives file
    (`{"id": KEY, "prompt": ..., "negative_prompt": ...}` per line). Its ids must be exactly the
    samples' keys: unknown, missing and duplicate ids are errors."""
    _check_exists(path, "negatives file")
    by_key = {s.key: s for s in samples}
    negatives: dict[str, str] = {}
    for n, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        row = _json_line(path, n, line)
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
    return [replace(s, negative_prompt=negatives[s.key]) for s in samples]


# --- readers -------------------------------------------------------------------------------------

def _read_lines(path, suffix: str) -> list[dict]:
    """JSONL or TXT; blank lines are skipped."""
    text = _read_text(path)
    if suffix == ".txt":
        return [_row({"prompt": line.strip()}, "prompt", f"{path} line {n}", blank_is_absent=False)
                for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    rows = []
    for n, line in enumerate(text.split("\n"), start=1):  # not splitlines: JSON strings may hold U+2028
        if not line.strip():
            continue
        row = _json_line(path, n, line)
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise ValueError(f'{path} line {n}: each line must be an object with a string "prompt"')
        rows.append(_row(row, "prompt", f"{path} line {n}", blank_is_absent=False))
    return rows


def _read_delimited(path, sep: str) -> list[dict]:
    """CSV (quoted cells allowed) or TSV (no quoting, as PartiPrompts: a cell may start with a quote)."""
    kind = "TSV" if sep == "\t" else "CSV"
    try:
        with fsspec.open(str(path), "rt", encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=sep, quoting=csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL)
            header = next(reader, None)
            if header is None:
                return []
            header = [h.strip() or f"column{i + 1}" for i, h in enumerate(header)]  # Excel leaves unnamed ones
            twice = sorted({h for h in header if header.count(h) > 1})
            if twice:
                raise ValueError(f"{path}: column {twice[0]!r} appears twice in the header; rename one")
            prompt_key = _prompt_column(path, header)
            rows = []
            for cells in reader:
                where = f"{path} line {reader.line_num}"
                if not any(c.strip() for c in cells):
                    continue
                if len(cells) > len(header):
                    hint = "TSV cells cannot hold tabs" if sep == "\t" else 'quote cells that hold commas: "a, b"'
                    raise ValueError(f"{where} has {len(cells)} cells but the header has {len(header)} columns; {hint}")
                rows.append(_row(dict(zip(header, cells)), prompt_key, where, blank_is_absent=True))
            return rows
    except csv.Error as e:
        raise ValueError(f"{path} is not valid {kind} ({e}); fix the file or convert it to JSONL") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None


def _read_parquet(path) -> list[dict]:
    try:
        with fsspec.open(str(path), "rb") as f:
            table = pq.read_table(f)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise ValueError(f"{path} is not a readable Parquet file ({e})") from None
    prompt_key = _prompt_column(path, table.column_names)
    return [_row(record, prompt_key, f"{path} row {n}", blank_is_absent=True)
            for n, record in enumerate(table.to_pylist(), start=1)]


# --- one row -------------------------------------------------------------------------------------

def _row(raw: dict, prompt_key: str, where: str, blank_is_absent: bool) -> dict:
    """One file row in the common shape: prompt, id?, negative_prompt?, seed?, metadata."""
    present = {k: v for k, v in raw.items() if not _absent(v, blank_is_absent)}
    prompt = present.pop(prompt_key, None)
    if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
        raise ValueError(f"{where}: the prompt is empty; give every row a prompt or delete the row")
    if not isinstance(prompt, str):
        raise ValueError(f"{where}: the prompt must be text, got {prompt!r:.80}")
    if "\x00" in prompt:
        raise ValueError(f"{where}: the prompt holds a NUL byte; the file is binary or corrupted")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"{where}: the prompt has {len(prompt):,} characters (at most {MAX_PROMPT_CHARS:,}); "
                         "a broken row? (text encoders read 77 tokens)")
    row = {"prompt": prompt}
    if "id" in present:
        row["id"] = _check_id(str(_plain(present.pop("id"))), where)
    if "negative_prompt" in present:
        negative = present.pop("negative_prompt")
        if not isinstance(negative, str):
            raise ValueError(f"{where}: negative_prompt must be text, got {negative!r}")
        row["negative_prompt"] = negative
    if "seed" in present:
        row["seed"] = _seed(present.pop("seed"), where)
    nested = present.pop("metadata", None) if isinstance(present.get("metadata"), dict) else None
    row["metadata"] = {str(k): _plain(v) for k, v in {**(nested or {}), **present}.items()
                       if not _absent(v, blank_is_absent)}
    return row


def _absent(value, blank_is_absent: bool) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return blank_is_absent and isinstance(value, str) and not value.strip()


def _plain(value):
    """A JSON-serialisable copy of a cell (Parquet dates, decimals, bytes become strings)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)


def _seed(value, where: str) -> int:
    seed = None
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        seed = int(value.strip())
    elif isinstance(value, float) and value.is_integer() and value >= 0:
        seed = int(value)
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0:
        seed = int(value)
    if seed is None or seed > MAX_SEED:
        raise ValueError(f"{where}: seed must be a non-negative integer below 2^63, got {value!r:.40}")
    return seed


def _seed_list(seeds) -> list[int]:
    """`seeds` of expand_samples as a list: a count N is 0..N-1."""
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool) and seeds >= 1:
        return list(range(int(seeds)))
    if isinstance(seeds, (list, tuple, range)) and len(seeds) > 0 and all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 0 for s in seeds):
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds {list(seeds)} lists a seed twice; list each seed once")
        return [int(s) for s in seeds]
    raise ValueError(f"seeds must be a count N >= 1 or a non-empty list of seeds >= 0, got {seeds!r}")


def _check_id(pid: str, where: str) -> str:
    if not _KEY_OK.match(pid):
        raise ValueError(f"{where}: prompt id {pid!r} may only hold letters, digits, '_' and '-'")
    return pid


def _prompt_column(path, columns) -> str:
    for name in PROMPT_COLUMNS:
        if name in columns:
            return name
    raise ValueError(f"{path}: unknown column layout: columns {list(columns)}; expected one of "
                     f"{', '.join(PROMPT_COLUMNS)}")


# --- files ---------------------------------------------------------------------------------------

def _suffix(path) -> str:
    return PurePosixPath(str(path).split("?", 1)[0]).suffix.lower()


def _check_exists(path, kind: str) -> None:
    fs, fs_path = fsspec.core.url_to_fs(str(path))
    if not fs.isfile(fs_path):
        raise ValueError(f"{kind} {path} does not exist")


def _read_text(path) -> str:
    try:
        with fsspec.open(str(path), "rt", encoding="utf-8-sig") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None


def _json_line(path, n: int, line: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} line {n} is not valid JSON ({e.msg}): {line[:80]!r}") from None
