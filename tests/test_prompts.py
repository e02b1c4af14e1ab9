"""prompts.py: every file format, column layouts, metadata, validation, stable keys, --seeds."""

import argparse
import json
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dnp_batch.prompts import (
    PROMPT_COLUMNS,
    Sample,
    expand_samples,
    parse_seeds,
    prompt_id,
    read_negatives,
    read_prompts,
)

PARTI_TSV = (
    "Prompt\tCategory\tChallenge\tNote\n"
    "bond\tAbstract\tBasic\tBiology-inspired concepts with multiple meanings\n"
    "42\tAbstract\tBasic\tSimple numbers but challenging\n"
    "a cat\tAnimals\tBasic\t\n"
    '"G I G G L E" painted as graffiti, 2 colors\tIllustrations\tWriting & Symbols\t\n'
)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_extra_keys_become_metadata(tmp_path):
    path = write(tmp_path, "p.jsonl", '{"prompt": "a cat", "id": 7, "seed": 3, "category": "Animals", '
                                      '"tags": ["pet"], "note": null}\n\n{"prompt": "a dog", "negative_prompt": ""}\n')
    assert read_prompts(path) == [
        {"prompt": "a cat", "id": "7", "seed": 3, "metadata": {"category": "Animals", "tags": ["pet"]}},
        {"prompt": "a dog", "negative_prompt": "", "metadata": {}},  # JSONL keeps an explicit empty negative
    ]


def test_jsonl_nested_metadata_round_trips(tmp_path):
    rows = [{"prompt": "a cat", "metadata": {"Category": "Animals"}, "extra": 1}]
    path = write(tmp_path, "p.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    assert read_prompts(path) == [{"prompt": "a cat", "metadata": {"Category": "Animals", "extra": 1}}]


def test_txt_one_prompt_per_line(tmp_path):
    path = write(tmp_path, "P.TXT", "a cat  \n\n  a dog\r\n")
    assert read_prompts(path) == [{"prompt": "a cat", "metadata": {}}, {"prompt": "a dog", "metadata": {}}]


def test_partiprompts_tsv(tmp_path):
    rows = read_prompts(write(tmp_path, "PartiPrompts.tsv", PARTI_TSV))
    assert rows[0] == {"prompt": "bond", "metadata": {
        "Category": "Abstract", "Challenge": "Basic", "Note": "Biology-inspired concepts with multiple meanings"}}
    assert rows[1]["prompt"] == "42"  # read as text, not as a number
    assert rows[2] == {"prompt": "a cat", "metadata": {"Category": "Animals", "Challenge": "Basic"}}  # no empty Note
    # TSV has no quoting: a prompt that starts with a quote is kept as written
    assert rows[3]["prompt"] == '"G I G G L E" painted as graffiti, 2 colors'


def test_drawbench_csv(tmp_path):
    path = write(tmp_path, "drawbench.csv", 'prompts,category\n"A red colored car, parked.",Colors\n'
                                            '"A sign that says ""Hello"".",Text\n\n')
    assert read_prompts(path) == [
        {"prompt": "A red colored car, parked.", "metadata": {"category": "Colors"}},
        {"prompt": 'A sign that says "Hello".', "metadata": {"category": "Text"}},
    ]


def test_csv_reserved_columns_and_bom(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes("\ufeffid,text,negative_prompt,seed,source\nfox,a fox,,2,\ncat,a cat,a dog,,coco\n".encode())
    assert read_prompts(path) == [
        {"prompt": "a fox", "id": "fox", "seed": 2, "metadata": {}},
        {"prompt": "a cat", "id": "cat", "negative_prompt": "a dog", "metadata": {"source": "coco"}},
    ]


def test_parquet(tmp_path):
    table = pa.table({
        "caption": ["a cat", "a dog"],
        "id": [1, None],
        "seed": [5, None],
        "Category": ["Animals", None],
        "score": [0.5, float("nan")],
        "tags": [["a", "b"], []],
    })
    pq.write_table(table, tmp_path / "p.parquet")
    rows = read_prompts(tmp_path / "p.parquet")
    assert rows == [
        {"prompt": "a cat", "id": "1", "seed": 5,
         "metadata": {"Category": "Animals", "score": 0.5, "tags": ["a", "b"]}},
        {"prompt": "a dog", "metadata": {"tags": []}},
    ]
    json.dumps(rows)  # metadata is JSON-serialisable


def test_parquet_written_by_pandas(tmp_path):
    pd = pytest.importorskip("pandas")
    pd.DataFrame({"prompt": ["a cat"], "Note": [None]}).to_parquet(tmp_path / "p.parquet")
    assert read_prompts(tmp_path / "p.parquet") == [{"prompt": "a cat", "metadata": {}}]


def test_fsspec_memory_url():
    url = f"memory://prompts-{uuid.uuid4().hex}/parti.tsv"
    with fsspec.open(url, "w") as f:
        f.write(PARTI_TSV)
    try:
        rows = read_prompts(url)
        assert [r["prompt"] for r in rows][:3] == ["bond", "42", "a cat"]
        with pytest.raises(ValueError, match="prompts file memory://.*/nope.jsonl does not exist"):
            read_prompts(url.replace("parti.tsv", "nope.jsonl"))
    finally:
        fsspec.filesystem("memory").rm(url.removeprefix("memory://").split("/")[0], recursive=True)


def test_unknown_column_layout_names_the_columns(tmp_path):
    path = write(tmp_path, "p.csv", "sentence,label\nhello,1\n")
    with pytest.raises(ValueError) as e:
        read_prompts(path)
    assert str(e.value) == (f"{path}: unknown column layout: columns ['sentence', 'label']; expected one of "
                            f"{', '.join(PROMPT_COLUMNS)}")
    assert "prompt, Prompt, prompts" in str(e.value)


def test_unknown_extension_lists_the_supported_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown extension '\.xlsx'.*\.jsonl, \.txt, \.csv, \.tsv, \.parquet"):
        read_prompts(write(tmp_path, "p.xlsx", "x"))


@pytest.mark.parametrize("name,text", [("p.jsonl", ""), ("p.txt", "\n  \n"), ("p.csv", ""), ("p.csv", "prompt\n"),
                                       ("p.tsv", "Prompt\tCategory\n")])
def test_empty_files_hold_no_prompts(tmp_path, name, text):
    with pytest.raises(ValueError, match="holds no prompts"):
        read_prompts(write(tmp_path, name, text))


def test_empty_parquet_holds_no_prompts(tmp_path):
    pq.write_table(pa.table({"prompt": pa.array([], pa.string())}), tmp_path / "p.parquet")
    with pytest.raises(ValueError, match="holds no prompts"):
        read_prompts(tmp_path / "p.parquet")


@pytest.mark.parametrize("name,text,where", [
    ("p.jsonl", '{"prompt": "ok"}\n{"prompt": "   "}\n', "p.jsonl line 2"),
    ("p.csv", "prompt,category\nok,a\n ,b\n", "p.csv line 3"),
    ("p.tsv", "Prompt\tCategory\nok\ta\n\tb\n", "p.tsv line 3"),
])
def test_blank_prompt_names_file_and_line(tmp_path, name, text, where):
    with pytest.raises(ValueError, match=f"{where}: the prompt is empty"):
        read_prompts(write(tmp_path, name, text))


def test_non_text_prompt_in_parquet(tmp_path):
    pq.write_table(pa.table({"prompt": [1, 2]}), tmp_path / "p.parquet")
    with pytest.raises(ValueError, match="p.parquet row 1: the prompt must be text, got 1"):
        read_prompts(tmp_path / "p.parquet")


@pytest.mark.parametrize("name,text,where", [
    ("p.jsonl", '{"prompt": "a", "seed": -1}\n', "line 1"),
    ("p.jsonl", '{"prompt": "a", "seed": 1.5}\n', "line 1"),
    ("p.jsonl", '{"prompt": "a", "seed": true}\n', "line 1"),
    ("p.csv", "prompt,seed\na,0\nb,x\n", "line 3"),
])
def test_bad_seed_names_the_row(tmp_path, name, text, where):
    with pytest.raises(ValueError, match=f"{where}: seed must be a non-negative integer"):
        read_prompts(write(tmp_path, name, text))


def test_ragged_csv_row(tmp_path):
    with pytest.raises(ValueError, match="p.csv line 2 has 3 cells but the header has 2 columns; quote cells"):
        read_prompts(write(tmp_path, "p.csv", "prompt,category\na cat, sitting,Animals\n"))


def test_bad_id_names_the_line(tmp_path):
    with pytest.raises(ValueError, match=r"p.csv line 2: prompt id 'x\.y' may only hold"):
        read_prompts(write(tmp_path, "p.csv", "id,prompt\nx.y,a\n"))


def test_jsonl_errors_keep_their_wording(tmp_path):
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        read_prompts(write(tmp_path, "p.jsonl", '{"prompt": "ok"}\n{"prompt": \n'))
    with pytest.raises(ValueError, match='line 1: each line must be an object with a string "prompt"'):
        read_prompts(write(tmp_path, "p.jsonl", '{"text": "no prompt key"}\n'))
    with pytest.raises(ValueError, match="prompts file .* does not exist"):
        read_prompts(tmp_path / "nope.jsonl")


def test_keys_do_not_depend_on_row_order_or_seed_order(tmp_path):
    lines = ['{"prompt": "a cat"}', '{"prompt": "a dog", "id": "dog"}', '{"prompt": "a fox", "seed": 9}']
    forward = write(tmp_path, "f.jsonl", "\n".join(lines))
    backward = write(tmp_path, "b.jsonl", "\n".join(reversed(lines)))
    a = {(s.prompt, s.seed): s.key for s in expand_samples(read_prompts(forward), [0, 3])}
    b = {(s.prompt, s.seed): s.key for s in expand_samples(read_prompts(backward), [3, 0])}
    assert a == b
    assert a[("a cat", 3)] == f"{prompt_id('a cat')}_3" and a[("a dog", 0)] == "dog_0"
    assert a[("a fox", 9)] == f"{prompt_id('a fox')}_9" and ("a fox", 0) not in a  # a row's own seed wins


def test_seeds_as_count_or_list():
    rows = [{"prompt": "a cat", "id": "cat", "metadata": {"Category": "Animals"}}]
    assert [s.key for s in expand_samples(rows, 3)] == ["cat_0", "cat_1", "cat_2"]
    samples = expand_samples(rows, [7, 2])
    assert samples == [Sample("cat_7", "a cat", 7, None, {"Category": "Animals"}),
                       Sample("cat_2", "a cat", 2, None, {"Category": "Animals"})]
    for bad in [0, [], [1, 1], [-1], "3", True]:
        with pytest.raises(ValueError, match="seed"):
            expand_samples(rows, bad)


def test_duplicate_ids_are_an_error(tmp_path):
    path = write(tmp_path, "p.csv", "id,prompt\nx,a\nx,b\n")
    with pytest.raises(ValueError, match=r"duplicate sample 'x_0' \(prompts #1 and #2\).*give rows with the same "
                                         r"text distinct ids"):
        expand_samples(read_prompts(path), 1)
    # identical rows are folded into the first (issue: real prompt sets repeat captions)
    same_text = write(tmp_path, "same.txt", "a cat\na cat\na dog\n")
    samples = expand_samples(read_prompts(same_text), 2)
    assert [s.prompt for s in samples] == ["a cat", "a cat", "a dog", "a dog"] and samples.folded == 2
    negatives = write(tmp_path, "neg.jsonl", '{"prompt": "a", "negative_prompt": "x"}\n{"prompt": "a", "negative_prompt": "y"}\n')
    with pytest.raises(ValueError, match="with different content"):
        expand_samples(read_prompts(negatives), 1)


def test_sample_is_frozen_and_hashable_with_metadata():
    a = Sample("k_0", "p", 0, None, {"x": 1})
    with pytest.raises(AttributeError):
        a.metadata = {}
    assert hash(a) == hash(Sample("k_0", "p", 0, None, {"x": 2})) and a != Sample("k_0", "p", 0)
    assert Sample("k_0", "p", 0).metadata == {}


def test_read_negatives_keeps_metadata(tmp_path):
    samples = expand_samples([{"prompt": "a cat", "id": "cat", "metadata": {"Category": "Animals"}}], 1)
    negatives = write(tmp_path, "neg.jsonl", '{"id": "cat_0", "prompt": "a cat", "negative_prompt": "blurry"}\n')
    assert read_negatives(negatives, samples) == [Sample("cat_0", "a cat", 0, "blurry", {"Category": "Animals"})]


def test_parse_seeds():
    assert parse_seeds("4") == 4
    assert parse_seeds("0,5,9") == [0, 5, 9]
    assert parse_seeds(" 9, 0 ") == [9, 0]
    assert parse_seeds("7,") == [7]
    for bad in ["0", "-1", "x", "", "1,,2", "1,1", "3-6", "1.5", "²"]:
        with pytest.raises(ValueError, match="--seeds must be a count N or a comma-separated list of seeds, got"):
            parse_seeds(bad)


def test_parse_seeds_message_reaches_argparse(capsys):
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=parse_seeds)
    assert parser.parse_args(["--seeds", "0,3"]).seeds == [0, 3]
    with pytest.raises(SystemExit):
        parser.parse_args(["--seeds", "1,1"])
    assert "--seeds must be a count N or a comma-separated list of seeds, got '1,1'" in capsys.readouterr().err


def test_csv_with_unnamed_trailing_columns(tmp_path):
    path = write(tmp_path, "p.csv", "prompt,category,,\na cat,Animals,,\na dog,,x,\n")
    assert read_prompts(path) == [{"prompt": "a cat", "metadata": {"category": "Animals"}},
                                  {"prompt": "a dog", "metadata": {"column3": "x"}}]


@pytest.mark.parametrize("fmt", ["parti.tsv", "drawbench.csv", "pickapic.parquet", "captions.txt"])
def test_real_prompt_sets_with_repeated_captions_fold_duplicates(tmp_path, fmt):
    """Real prompt sets repeat captions (Pick-a-Pic's many times): identical rows are generated once,
    keeping the first row's metadata; each format as its source writes it."""
    texts = ['"Hello" written on a cake', "a cat", "a cat", "a dog, running", "a cat"]
    if fmt == "parti.tsv":
        path = write(tmp_path, fmt, "Prompt\tCategory\tChallenge\tNote\n" +
                     "".join(f"{t}\tCat{i}\tBasic\t\n" for i, t in enumerate(texts)))
    elif fmt == "drawbench.csv":
        quoted = ['"' + t.replace('"', '""') + '"' for t in texts]
        path = write(tmp_path, fmt, "Prompts,Category\n" + "".join(f"{q},Cat{i}\n" for i, q in enumerate(quoted)))
    elif fmt == "pickapic.parquet":
        path = tmp_path / fmt
        pq.write_table(pa.table({"caption": texts, "ranking_id": list(range(5)), "Category": [f"Cat{i}" for i in
                                                                                           range(5)]}), path)
    else:
        path = write(tmp_path, fmt, "".join(t + "\n" for t in texts))
    samples = expand_samples(read_prompts(path), 2)
    assert [s.prompt for s in samples[::2]] == ['"Hello" written on a cake', "a cat", "a dog, running"]
    assert len(samples) == 6 and samples.folded == 4 and len({s.key for s in samples}) == 6
    if fmt != "captions.txt":
        assert samples[2].metadata["Category"] == "Cat1"  # the first row's metadata is kept
