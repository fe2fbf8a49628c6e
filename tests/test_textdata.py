"""Examples files read as a model folder's batches: formats, columns, labels, the split, and bad input named."""

from __future__ import annotations

import json

import pytest

from autoprune.errors import DataError
from autoprune.textdata import TextData, label_ids, read_examples, text_loaders


class WordTokenizer:
    """A stand-in with a tokenizer's call and pad: one id per word."""

    def __call__(self, texts, truncation, max_length, is_split_into_words=False):
        ids = [[1 + len(w) for w in t.split()][:max_length] for t in texts]
        return {"input_ids": ids, "attention_mask": [[1] * len(i) for i in ids]}

    def pad(self, features, padding, return_tensors):
        import torch

        width = max(len(f["input_ids"]) for f in features)
        out = {k: torch.tensor([f[k] + [0] * (width - len(f[k])) for f in features])
               for k in ("input_ids", "attention_mask")}
        if "labels" in features[0]:
            out["labels"] = torch.tensor([f["labels"] for f in features])
        return out


ROWS = [{"sentence": f"example number {i} " + "word " * (i % 5), "label": "pos" if i % 2 else "neg"} for i in range(20)]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json"])
def test_each_format_gives_the_same_examples_with_the_usual_column_names(tmp_path, suffix):
    """CSV, TSV, JSON Lines and a JSON array read alike; 'sentence' and 'label' are found without options."""
    path = tmp_path / f"data{suffix}"
    if suffix in (".csv", ".tsv"):
        sep = "," if suffix == ".csv" else "\t"
        path.write_text("sentence" + sep + "label\n" + "".join(f"{r['sentence']}{sep}{r['label']}\n" for r in ROWS))
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    else:
        path.write_text(json.dumps(ROWS))
    texts, labels = read_examples(path, text_column=None, label_column=None, labelled=True)
    assert texts == [r["sentence"] for r in ROWS] and labels == [r["label"] for r in ROWS]


def test_a_quoted_csv_field_keeps_its_commas_and_line_breaks(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('text,label\n"good, very good\nindeed",1\nbad,0\n')
    assert read_examples(path, text_column=None, label_column=None, labelled=True) == (
        ["good, very good\nindeed", "bad"], ["1", "0"])


def test_a_text_file_is_one_unlabelled_example_per_line(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("first one\n\nsecond one\n")
    assert read_examples(path, text_column=None, label_column=None, labelled=False) == (["first one", "second one"], None)


@pytest.mark.parametrize("content, column, message", [
    ("text,label\na,1\n", "review", "no column 'review'"),
    ("", None, "holds no example"),
    ('{"text": "a"}\nnot json\n', None, "line 2"),
    ("body,label\na,1\n", None, "no text column"),
])
def test_bad_files_and_columns_are_named(tmp_path, content, column, message):
    """A missing column lists the file's columns; an empty file and a broken JSON line are named."""
    path = tmp_path / ("data.jsonl" if content.startswith("{") else "data.csv")
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        read_examples(path, text_column=column, label_column=None, labelled=False)
    assert str(path) in str(info.value)


def test_a_labelled_task_without_a_label_column_says_how_to_name_it(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,stars\ngood,5\n")
    with pytest.raises(DataError, match="--label-column"):
        read_examples(path, text_column=None, label_column=None, labelled=True)


def test_labels_map_by_the_models_names_or_as_class_ids_and_others_are_refused():
    assert label_ids(["neg", "pos"], {"neg": 0, "pos": 1}, 2, "f") == [0, 1]
    assert label_ids(["1", 0, "0"], {"LABEL_0": 0, "LABEL_1": 1}, 2, "f") == [1, 0, 0]
    with pytest.raises(DataError, match="'2'.*0..1"):
        label_ids(["0", "2"], {"LABEL_0": 0, "LABEL_1": 1}, 2, "f")


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_split_is_the_seeds_and_a_validation_file_replaces_it(tmp_path):
    """The same seed holds out the same examples, another seed others; --val takes the whole file for training."""
    path = _write(tmp_path / "data.jsonl", [{"text": r["sentence"]} for r in ROWS])

    def held_out(**kw):
        _, val = text_loaders(TextData(path=str(path), val_fraction=0.25, **kw), WordTokenizer(), labels_to_ids=None)
        return [tuple(row) for batch in val for row in batch["input_ids"].tolist()]

    assert held_out(seed=0) == held_out(seed=0) and held_out(seed=0) != held_out(seed=1)
    assert len(held_out(seed=0)) == 5
    val_file = _write(tmp_path / "val.jsonl", [{"text": "held out text"}] * 3)
    train, val = text_loaders(TextData(path=str(path), val=str(val_file)), WordTokenizer(), labels_to_ids=None)
    assert len(train.dataset) == 20 and len(val.dataset) == 3


def test_batches_are_padded_to_their_longest_example_and_carry_labels(tmp_path):
    path = _write(tmp_path / "data.jsonl", [{"text": r["sentence"], "label": r["label"]} for r in ROWS])
    train, _ = text_loaders(TextData(path=str(path), batch_size=4), WordTokenizer(),
                            labels_to_ids=lambda labels, where: label_ids(labels, {"neg": 0, "pos": 1}, 2, where))
    for batch in train:
        longest = int(batch["attention_mask"].sum(1).max())
        assert batch["input_ids"].shape[1] == longest and set(batch["labels"].tolist()) <= {0, 1}
