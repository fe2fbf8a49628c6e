"""An image folder as a CNN's data (--data images:DIR): labels from class folders or none, the presets each
implies, the crops, and undecodable or mismatched folders refused before anything is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from autoprune import search
from autoprune.errors import DataError
from autoprune.imagedata import ImageData, image_loaders, image_setup
from autoprune.metrics import TopOneAgreement
from tests.conftest import fast_profile

REPO = Path(__file__).resolve().parent.parent


def _images(folder: Path, n: int, shade: int = 0, size: tuple[int, int] = (30, 40)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(shade)
    for i in range(n):
        pixels = (rng.random((*size, 3)) * 100 + shade).astype("uint8")
        Image.fromarray(pixels).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")


def cnn(outputs: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
                         nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, outputs)).eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    _images(root / "classes" / "cats", 8, shade=0)
    _images(root / "classes" / "dogs", 8, shade=120)
    _images(root / "flat", 12, shade=60)
    return root


def test_class_folders_are_labels_and_a_flat_folder_has_none(folders):
    """Sub-folders in sorted order are class ids 0, 1 (accuracy, no metric object); a flat folder yields
    unlabelled batches scored by agreement with the dense model (1 for the dense model itself)."""
    labelled = image_setup(cnn(), f"images:{folders / 'classes'}")
    x, y = next(iter(labelled.data[0]))
    assert labelled.classes == ["cats", "dogs"] and labelled.metric is None and set(y.tolist()) <= {0, 1}
    flat = image_setup(cnn(), f"images:{folders / 'flat'}")
    assert isinstance(flat.metric, TopOneAgreement) and len(next(iter(flat.data[1]))) == 1
    assert flat.metric(cnn(), flat.data[1]) == 1.0


def test_images_are_cropped_square_and_normalised_with_the_given_statistics(folders):
    data = ImageData(path=str(folders / "flat"), image_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    (train, val), _ = image_loaders(data)
    batch = next(iter(val))[0]
    assert batch.shape[1:] == (3, 16, 16)
    raw = batch * 0.25 + 0.5  # back to [0, 1]
    assert raw.min() >= -1e-6 and raw.max() <= 1 + 1e-6


def test_the_split_is_the_seeds(folders):
    def held_out(seed):
        (_, val), _ = image_loaders(ImageData(path=str(folders / "flat"), val_fraction=0.25, seed=seed))
        return [p.name for p in val.dataset.paths]

    assert held_out(0) == held_out(0) and held_out(0) != held_out(3) and len(held_out(0)) == 3


def test_an_undecodable_image_is_named_before_anything_runs(tmp_path):
    _images(tmp_path / "flat", 4)
    (tmp_path / "flat" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="broken.jpg cannot be decoded"):
        image_setup(cnn(), f"images:{tmp_path / 'flat'}")


def test_class_folders_the_model_cannot_hold_are_refused(folders):
    """Two named class folders and a 5-output model: which output is 'cats'? Refused, saying what to do."""
    with pytest.raises(DataError, match="2 class folders.*5 outputs"):
        image_setup(cnn(outputs=5), f"images:{folders / 'classes'}")


def test_search_on_an_image_folder_runs_with_the_presets_and_records_them(folders, tmp_path):
    images = ImageData(path=str(folders / "flat"), image_size=16)
    result = search(cnn(), images, space=str(REPO / "tests" / "data" / "tiny.yaml"), n_trials=2, out_dir=tmp_path,
                    seed=0, profile=fast_profile())
    assert [t.state for t in result.trials] == ["complete"] * 2, [t.failure_reason for t in result.trials]
    assert result.meta.metric == "top1_agreement" and result.meta.data == f"images:{(folders / 'flat').resolve()}"
    assert result.meta.extra["images"]["image_size"] == 16


def test_the_command_line_takes_an_image_folder_and_refuses_an_empty_one(folders, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "mods.py").write_text("from tests.test_imagedata import cnn\n")
    env = {**__import__("os").environ, "PYTHONPATH": f"{REPO}:{tmp_path}"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "autoprune.cli", "search", "--model", "mods:cnn",  # noqa: E731
                                     "--trials", "1", "--no-progress", "--image-size", "16", *map(str, a)],
                                    cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    empty = run("--data", f"images:{tmp_path / 'empty'}", "--out", tmp_path / "none")
    assert empty.returncode == 2 and "holds no image" in empty.stderr and not (tmp_path / "none").exists()
    done = run("--data", f"images:{folders / 'classes'}", "--out", tmp_path / "run", "--space",
               REPO / "tests" / "data" / "tiny.yaml")
    assert done.returncode == 0, done.stderr
    assert "accuracy over 2 classes" in done.stderr


def test_an_image_folder_presets_the_pretrained_space_and_a_given_space_wins():
    from autoprune.cli.given import space_for

    assert space_for("mods:cnn", None, "images:photos") == "pretrained"
    assert space_for("hf:models/minilm", None, "train.csv") == "transformer"
    assert space_for("mods:cnn", "structured", "images:photos") == "structured"
    assert space_for(None, None, None) == "default"
