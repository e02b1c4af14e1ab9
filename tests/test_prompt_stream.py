"""PromptSet (prompts streamed from their file) equals the in-memory Samples: same samples, shards and plan
digest, for every format, line ending, folded duplicate and per-row seed; and the same errors."""

import hashlib
import json
import re

import pickle

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dnp_batch.config import load_config
from dnp_batch.job import run, run_local
from dnp_batch.prompts import PromptSet, Samples, expand_samples, read_prompts
from jobutil import FAST, PROMPTS, read_run


def old_plan_digest(samples, per_shard):
    """The digest as job.plan_digest computed it before streaming (one JSON blob in memory)."""
    plan = [(i, samples[start:start + per_shard]) for i, start in enumerate(range(0, len(samples), per_shard))]
    blob = json.dumps([[s.key, s.prompt, s.negative_prompt] for _, shard in plan for s in shard] +
                      [[len(shard) for _, shard in plan]], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


JSONL = "".join(json.dumps(r) + "\n" for r in [
    {"prompt": "a red cube", "category": "shapes"},
    {"prompt": "a red cube", "category": "again"},  # folded (same text, no id)
    {"prompt": "two green balls\u2028on a table", "negative_prompt": "blur"},
    {"prompt": "own seed", "seed": 7},
    {"prompt": "with id", "id": "p-1", "metadata": {"k": 1}},
]) + "\n" + '{"prompt": "crlf line"}\r\n{"prompt": "lone cr"}\r{"prompt": "last, no newline"}'
TXT = "\ufeffone\r\ntwo\rthree\x0cfour\n\n  five  \nthree\nsix"
CSV = 'prompt,category,\n"a, quoted\nmulti-line prompt",x,\nplain,y,z\r\n\r\nlone cr,q,\rlast,w,'
TSV = 'Prompt\tCategory\tChallenge\tNote\n"a quote starts this\tA\tB\tC\nsecond\tA\t\t\n'


@pytest.fixture(params=["jsonl", "txt", "csv", "tsv", "parquet"])
def prompts_file(request, tmp_path):
    kind = request.param
    path = tmp_path / f"p.{kind}"
    if kind == "parquet":
        rows = [{"prompt": f"prompt {i % 23}", "score": i} for i in range(100)]  # repeats: folded
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=7)
    else:
        path.write_bytes({"jsonl": JSONL, "txt": TXT, "csv": CSV, "tsv": TSV}[kind].encode())
    return path


@pytest.mark.parametrize("seeds", [1, 3, [5, 2]])
def test_prompt_set_equals_samples(prompts_file, seeds):
    expected = expand_samples(read_prompts(prompts_file), seeds)
    streamed = PromptSet(prompts_file, seeds)
    assert list(streamed) == list(expected)
    assert (len(streamed), streamed.folded) == (len(expected), expected.folded)
    assert streamed.missing_negatives() == expected.missing_negatives()
    for per_shard in (1, 2, 3, 5, 100):
        shards = -(-len(expected) // per_shard)
        assert [streamed.shard(i, per_shard) for i in range(shards)] == \
               [expected.shard(i, per_shard) for i in range(shards)]
        assert streamed.digest(per_shard) == expected.digest(per_shard) == old_plan_digest(expected, per_shard)


def test_folding_happened(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("a\nb\na\nc\nb\n")
    streamed = PromptSet(path, 2)
    assert (len(streamed), streamed.folded) == (6, 4)
    assert [s.prompt for s in streamed.shard(1, 4)] == ["c", "c"]


@pytest.mark.parametrize("text, message", [
    ('{"prompt": "a", "id": "x"}\n{"prompt": "b", "id": "x"}\n',
     "duplicate sample 'x_0' (prompts #1 and #2) with different content"),
    ('{"prompt": "a"}\n{"prompt": "b", "seed": "x"}\n', "line 2: seed must be a non-negative integer"),
    ("", "holds no prompts"),
])
def test_prompt_set_errors_match(tmp_path, text, message):
    path = tmp_path / "p.jsonl"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)) as streamed:
        PromptSet(path, 1)
    with pytest.raises(ValueError, match=re.escape(message)) as in_memory:
        expand_samples(read_prompts(path), 1, path)
    assert str(streamed.value) == str(in_memory.value)


def test_samples_is_a_list():
    assert isinstance(Samples(), list)


def test_prompt_set_pickles_for_workers(prompts_file):
    streamed = PromptSet(prompts_file, 2)
    copy = pickle.loads(pickle.dumps(streamed))
    assert copy.shard(1, 3) == streamed.shard(1, 3)


def test_job_from_a_prompt_set_writes_the_same_bytes_and_manifest(tmp_path):
    cfg = load_config(FAST, sets=["output.samples_per_shard=3", "method=cfg"])
    run(cfg, expand_samples(read_prompts(PROMPTS), 2), str(tmp_path / "list"), run_local)
    run(cfg, PromptSet(PROMPTS, 2), str(tmp_path / "stream"), run_local)
    listed, streamed = read_run(tmp_path / "list"), read_run(tmp_path / "stream")
    assert sorted(streamed) == sorted(listed) and len(listed) == 8
    for key, files in listed.items():
        assert (streamed[key]["png"], streamed[key]["txt"]) == (files["png"], files["txt"])
        record, other = json.loads(files["json"]), json.loads(streamed[key]["json"])
        assert {**record, "seconds": None} == {**other, "seconds": None}  # all but the wall time
    manifests = [json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("list", "stream")]
    assert manifests[0]["plan_sha256"] == manifests[1]["plan_sha256"]
    assert manifests[0]["shards"] == manifests[1]["shards"] == 3
