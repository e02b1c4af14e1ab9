"""Prompt files in, samples out: one sample per (prompt, seed), each with a stable key.

A prompts file is JSONL, TXT, CSV, TSV or Parquet, local or any fsspec URL (`s3://...`). Each row
becomes `{"prompt", "id"?, "negative_prompt"?, "seed"?, "metadata"}`: every other column or key
(PartiPrompts' Category/Challenge/Note, DrawBench's category) travels in `metadata`.
"""

from __future__ import annotations

import argparse
from array import array
import csv
import datetime
import hashlib
import json
import math
import numbers
import re
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Iterator

import fsspec
import numpy as np
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
    _check_prompts_file(path)
    rows = [row for row, _ in iter_rows(path)]
    if not rows:
        raise ValueError(f"prompts file {path} holds no prompts")
    return rows


def _check_prompts_file(path) -> None:
    suffix = _suffix(path)
    if suffix not in FORMATS:
        raise ValueError(f"prompts file {path} has an unknown extension {suffix or '(none)'!r}; "
                         f"use one of {', '.join(FORMATS)}")
    _check_exists(path, "prompts file")


def iter_rows(path: str | Path, start: int = 0) -> Iterator[tuple[dict, int]]:
    """(row, position) of each row of a prompts file, one at a time, from `start` (a position this
    generator yielded earlier; 0 is the beginning) on: what `read_prompts` returns, streamed.
    Positions are byte offsets of lines (with a sub-line index in the low 24 bits: TXT and JSONL
    rows may end in a lone CR) or Parquet row numbers."""
    suffix = _suffix(path)
    if suffix == ".parquet":
        yield from _iter_parquet(path, start)
    elif suffix in (".csv", ".tsv"):
        yield from _iter_delimited(path, "\t" if suffix == ".tsv" else ",", start)
    else:
        yield from _iter_lines(path, suffix, start)


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


def shard_sizes(count: int, per_shard: int) -> list[int]:
    """Shard i holds samples [i·S, (i+1)·S) of the prompt set, in prompts-file order."""
    return [min(per_shard, count - start) for start in range(0, count, per_shard)]


def _plan_digest(items: Iterator[list], sizes: list[int]) -> str:
    """What a shard holds must not change between a run and its resume: SHA-256 of the JSON list of
    every sample's [key, prompt, negative_prompt], then the list of shard sizes, written as it streams."""
    h = hashlib.sha256(b"[")
    sep = b""
    for item in items:
        h.update(sep + json.dumps(item, ensure_ascii=False).encode())
        sep = b", "
    h.update(sep + json.dumps(sizes).encode() + b"]")  # the shards' sizes, one list
    return h.hexdigest()


class Samples(list):
    """The samples of a prompt set, in memory; `folded` counts the duplicate rows generated only once.
    `PromptSet` is the same set streamed from its file (same shards, same digest)."""

    folded: int = 0

    def shard(self, i: int, per_shard: int) -> list["Sample"]:
        return list(self[i * per_shard:(i + 1) * per_shard])

    def digest(self, per_shard: int) -> str:
        return _plan_digest(([s.key, s.prompt, s.negative_prompt] for s in self), shard_sizes(len(self), per_shard))

    def missing_negatives(self) -> tuple[int, str | None]:
        """(how many samples have no negative prompt, the first one's key)."""
        missing = [s.key for s in self if s.negative_prompt is None]
        return len(missing), missing[0] if missing else None


def as_samples(samples) -> "Samples | PromptSet":
    """A job's samples: a PromptSet or Samples as they are, any other list of Sample as Samples."""
    return samples if isinstance(samples, (Samples, PromptSet)) else Samples(samples)


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


def _hash128(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class PromptSet:
    """The samples of a prompts file without holding them: one streaming pass checks every row
    (the same errors as `read_prompts`), folds duplicates and checks keys as `expand_samples` does
    (comparing 128-bit BLAKE2 hashes of keys and contents, not the strings), and keeps per row only
    where it starts in the file and how many samples it gives (24 bytes). `shard(i, S)` re-reads
    shard i's rows from the file, so a worker can build its shard; the shards, keys and plan digest
    are exactly those of `expand_samples(read_prompts(path), seeds)` (a `Samples`)."""

    def __init__(self, path: str | Path, seeds: int | list[int]):
        _check_prompts_file(path)
        self.path, self.seeds = str(path), _seed_list(seeds)
        positions, counts = array("q"), array("q")
        keys, contents = bytearray(), array("Q")
        self._start_items()
        for n, (row, pos) in enumerate(iter_rows(path), start=1):
            seeds_here = self._row_seeds(row, n)
            positions.append(pos)
            counts.append(len(seeds_here))
            content = hashlib.blake2b(json.dumps([row["prompt"], row.get("negative_prompt")]).encode(),
                                      digest_size=8).digest()
            for key, _ in self._keys(row, seeds_here):
                keys += _hash128(key)
                contents.append(int.from_bytes(content, "little"))
                self._add_item(key, row["prompt"], row.get("negative_prompt"))
        if not positions:
            raise ValueError(f"prompts file {path} holds no prompts")
        self._pos = np.frombuffer(positions, dtype=np.int64)
        self._cum_all = np.cumsum(np.frombuffer(counts, dtype=np.int64))  # samples through row r, folded ones too
        self._folded = self._find_folded(np.frombuffer(keys, dtype=np.uint64).reshape(-1, 2),
                                         np.frombuffer(contents, dtype=np.uint64))
        self.folded = len(self._folded)
        if self.folded:
            per_row = np.diff(self._cum_all, prepend=0)
            rows_of = np.searchsorted(self._cum_all, self._folded, side="right")
            per_row -= np.bincount(rows_of, minlength=len(per_row))
            self._cum = np.cumsum(per_row)
        else:
            self._cum = self._cum_all
        self.count = int(self._cum[-1])
        if self.folded:  # one more pass for what depends on the folded set: the digest, missing negatives
            self._start_items()
            for s in self:
                self._add_item(s.key, s.prompt, s.negative_prompt)

    def _start_items(self) -> None:
        self._items_hash, self._sep = hashlib.sha256(b"["), b""
        self._missing, self._first_missing = 0, None

    def _add_item(self, key: str, prompt: str, negative: str | None) -> None:
        self._items_hash.update(self._sep + json.dumps([key, prompt, negative], ensure_ascii=False).encode())
        self._sep = b", "
        if negative is None:
            self._missing += 1
            self._first_missing = self._first_missing or key

    def _row_seeds(self, row: dict, n: int) -> list[int]:
        own = row.get("seed")
        return [_seed(own, f"prompt #{n}")] if own is not None else self.seeds

    @staticmethod
    def _keys(row: dict, seeds: list[int]):
        pid = row["id"] if row.get("id") is not None else prompt_id(row["prompt"])
        return [(f"{pid}_{seed}", seed) for seed in seeds]

    def _find_folded(self, keys: np.ndarray, contents: np.ndarray) -> np.ndarray:
        """Indexes (over every sample, folded ones too) of the samples folded into an earlier one;
        the same key for other content is the error `expand_samples` raises."""
        order = np.lexsort((np.arange(len(keys)), keys[:, 1], keys[:, 0]))  # by key, then file order
        k = keys[order]
        same = np.flatnonzero((k[1:] == k[:-1]).all(axis=1)) + 1  # positions in `order` repeating a key
        if not len(same):
            return np.empty(0, dtype=np.int64)
        group_start = np.maximum.accumulate(np.where(np.r_[True, (k[1:] != k[:-1]).any(axis=1)],
                                                     np.arange(len(k)), 0))
        later, first = order[same], order[group_start[same]]
        clash = contents[later] != contents[first]
        if clash.any():
            j = int(np.argmin(np.where(clash, later, np.iinfo(np.int64).max)))
            row_first, row_later = (int(np.searchsorted(self._cum_all, x, side="right")) + 1
                                    for x in (first[j], later[j]))
            key = self._key_of(int(later[j]))
            raise ValueError(f"prompts file {self.path}: duplicate sample {key!r} (prompts #{row_first} and "
                             f"#{row_later}) with different content: prompt ids must be unique; give rows with "
                             "the same text distinct ids")
        return np.sort(later)

    def _key_of(self, index: int) -> str:
        """The key of sample `index` (counting folded samples too)."""
        r = int(np.searchsorted(self._cum_all, index, side="right"))
        before = int(self._cum_all[r - 1]) if r else 0
        row, _ = next(iter_rows(self.path, int(self._pos[r])))
        return self._keys(row, self._row_seeds(row, r + 1))[index - before][0]

    def _samples_from(self, r: int) -> Iterator[Sample]:
        """The samples of rows r, r+1, ... that are not folded."""
        before = int(self._cum_all[r - 1]) if r else 0
        for n, (row, _) in enumerate(iter_rows(self.path, int(self._pos[r])), start=r + 1):
            for key, seed in self._keys(row, self._row_seeds(row, n)):
                if not (self.folded and _contains(self._folded, before)):
                    yield Sample(key, row["prompt"], seed, row.get("negative_prompt"), dict(row.get("metadata") or {}))
                before += 1

    def __getstate__(self) -> dict:  # what a worker needs to read shards (not the digest's hash state)
        return {k: v for k, v in self.__dict__.items() if k not in ("_items_hash", "_sep")}

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Sample]:
        return self._samples_from(0)

    def shard(self, i: int, per_shard: int) -> list[Sample]:
        start = i * per_shard
        if not 0 <= start < self.count:
            return []
        r = int(np.searchsorted(self._cum, start, side="right"))
        skip = start - (int(self._cum[r - 1]) if r else 0)
        out = []
        for sample in self._samples_from(r):
            if skip:
                skip -= 1
                continue
            out.append(sample)
            if len(out) == per_shard:
                break
        return out

    def digest(self, per_shard: int) -> str:
        h = self._items_hash.copy()
        h.update(b", " + json.dumps(shard_sizes(self.count, per_shard)).encode() + b"]")
        return h.hexdigest()

    def missing_negatives(self) -> tuple[int, str | None]:
        return self._missing, self._first_missing


def _contains(sorted_array: np.ndarray, value: int) -> bool:
    i = int(np.searchsorted(sorted_array, value))
    return i < len(sorted_array) and int(sorted_array[i]) == value


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

_SUB_BITS = 24  # a position is (byte offset of a line) << 24 | (index of a sub-line within it)
_LONE_CR = re.compile(r"(?<=\r)(?!\n)")


def _binary_lines(path, offset: int = 0) -> Iterator[tuple[int, str]]:
    """(byte offset, decoded text) of each \\n-terminated line from `offset`; the BOM at byte 0 is
    dropped (utf-8-sig)."""
    with fsspec.open(str(path), "rb") as f:
        if offset:
            f.seek(offset)
        while raw := f.readline():
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path} is not UTF-8 text ({e.reason} at byte {offset + e.start}); "
                                 "save it as UTF-8") from None
            if offset == 0 and text.startswith("\ufeff"):
                text = text[1:]
            yield offset, text
            offset += len(raw)


def _sub_lines(path, start: int, split) -> Iterator[tuple[int, str]]:
    """(position, text) of each logical line: each binary line cut by `split`, from position `start`."""
    offset, skip = start >> _SUB_BITS, start & ((1 << _SUB_BITS) - 1)
    for line_offset, text in _binary_lines(path, offset):
        pieces = split(text)
        if len(pieces) >= 1 << _SUB_BITS:
            raise ValueError(f"{path}: a line holds {len(pieces):,} line breaks other than LF; convert the file "
                             "to LF line endings")
        for sub in range(skip, len(pieces)):
            yield (line_offset << _SUB_BITS) | sub, pieces[sub]
        skip = 0


def _universal_lines(text: str) -> list[str]:
    """A binary line's lines as text mode reads them (CRLF and a lone CR end lines too)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").removesuffix("\n").split("\n")


def _iter_lines(path, suffix: str, start: int = 0, first_line: int = 1) -> Iterator[tuple[dict, int]]:
    """JSONL or TXT; blank lines are skipped. (Line numbers count from the file's start when
    start is 0, else from `first_line`.)"""
    if suffix == ".txt":
        for n, (pos, line) in enumerate(_sub_lines(path, start, str.splitlines), start=first_line):
            if line.strip():
                yield _row({"prompt": line.strip()}, "prompt", f"{path} line {n}", blank_is_absent=False), pos
        return
    for n, (pos, line) in enumerate(_sub_lines(path, start, _universal_lines), start=first_line):
        # not splitlines: JSON strings may hold U+2028
        if not line.strip():
            continue
        row = _json_line(path, n, line)
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise ValueError(f'{path} line {n}: each line must be an object with a string "prompt"')
        yield _row(row, "prompt", f"{path} line {n}", blank_is_absent=False), pos


def _iter_delimited(path, sep: str, start: int = 0) -> Iterator[tuple[dict, int]]:
    """CSV (quoted cells allowed) or TSV (no quoting, as PartiPrompts: a cell may start with a quote)."""
    kind = "TSV" if sep == "\t" else "CSV"
    quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    split = _LONE_CR.split  # csv's newline="": a lone CR ends a line too, and each line keeps its ending
    record = {"first": None}  # where the record being read began

    def texts(lines):
        for pos, line in lines:
            if record["first"] is None:
                record["first"] = pos
            yield line

    try:
        lines = _sub_lines(path, 0, split)
        head = csv.reader(texts(lines), delimiter=sep, quoting=quoting)
        header = next(head, None)
        if header is None:
            return
        header = [h.strip() or f"column{i + 1}" for i, h in enumerate(header)]  # Excel leaves unnamed ones
        twice = sorted({h for h in header if header.count(h) > 1})
        if twice:
            raise ValueError(f"{path}: column {twice[0]!r} appears twice in the header; rename one")
        prompt_key = _prompt_column(path, header)
        line_base = head.line_num  # the header's lines (line numbers are exact when reading from the start)
        if start:
            lines.close()
            lines = _sub_lines(path, start, split)
        reader = csv.reader(texts(lines), delimiter=sep, quoting=quoting)
        while True:
            record["first"] = None
            cells = next(reader, None)
            if cells is None:
                return
            where = f"{path} line {reader.line_num + line_base}"
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(header):
                hint = "TSV cells cannot hold tabs" if sep == "\t" else 'quote cells that hold commas: "a, b"'
                raise ValueError(f"{where} has {len(cells)} cells but the header has {len(header)} columns; {hint}")
            yield _row(dict(zip(header, cells)), prompt_key, where, blank_is_absent=True), record["first"]
    except csv.Error as e:
        raise ValueError(f"{path} is not valid {kind} ({e}); fix the file or convert it to JSONL") from None


def _iter_parquet(path, start: int = 0) -> Iterator[tuple[dict, int]]:
    try:
        f = fsspec.open(str(path), "rb").open()
        parquet = pq.ParquetFile(f)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise ValueError(f"{path} is not a readable Parquet file ({e})") from None
    with f:
        prompt_key = _prompt_column(path, parquet.schema_arrow.names)
        meta, first = parquet.metadata, 0
        for group in range(meta.num_row_groups):
            rows_here = meta.row_group(group).num_rows
            if first + rows_here > start:
                for batch in parquet.iter_batches(batch_size=4096, row_groups=[group]):
                    for record in batch.to_pylist():
                        if first >= start:
                            yield _row(record, prompt_key, f"{path} row {first + 1}", blank_is_absent=True), first
                        first += 1
            else:
                first += rows_here


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
