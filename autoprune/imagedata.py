"""A folder of images as a CNN's data: ``--data images:DIR``.

* A folder of class sub-folders (``DIR/cat/*.jpg``, ``DIR/dog/*.jpg``) is labelled: a sub-folder named by
  an integer is that class id, else the classes are the sub-folders in sorted order (the model must then
  have one output per sub-folder); quality = accuracy.
* A flat folder of images has no labels: quality = top-1 agreement with the dense model
  (:class:`~autoprune.metrics.TopOneAgreement`), and the fine-tune is distillation alone.

Images are decoded with Pillow (JPEG, PNG, BMP, WebP, ...), resized so the shorter side is
``image_size * 256 / 224`` and center-cropped to ``image_size`` (training images: a random crop of the
resized image and a random horizontal flip, seeded), scaled to [0, 1] and normalised with ``mean`` and
``std`` (ImageNet's by default). The split is by ``seed`` (``val_fraction``, or a separate ``val`` folder).

Example:
    >>> ImageData(path="photos").to_dict()["image_size"]
    224
"""

from __future__ import annotations

import copy
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from autoprune import defaults
from autoprune.defaults import IMAGES_PREFIX, is_images_spec
from autoprune.distill import Distillation
from autoprune.errors import DataError
from autoprune.metrics import TopOneAgreement
from autoprune.modelio import ModelIO
from autoprune.splits import split

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def names_images(data: Any) -> bool:
    """Whether ``data`` is an image folder: ``images:DIR`` or an :class:`ImageData`."""
    return isinstance(data, ImageData) or is_images_spec(data)


@dataclass(frozen=True)
class ImageData:
    """Where the images are and how they become batches (stored with the study; see the module docstring)."""

    path: str
    image_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    val_fraction: float = 0.2
    val: str | None = None
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise DataError(f"--image-size must be at least 8 pixels, got {self.image_size}")
        if not 0.0 < self.val_fraction < 1.0:
            raise DataError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise DataError(f"--mean and --std need one value per channel and positive std, got {self.mean} and "
                            f"{self.std}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageData:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{k: tuple(v) if k in ("mean", "std") else v for k, v in fields.items()})


def scan(directory: str | Path) -> tuple[list[Path], list[int] | None, list[str]]:
    """The images under ``directory``, their class ids (None for a flat folder) and the class names."""
    root = Path(directory)
    if not root.is_dir():
        raise DataError(f"--data images:{directory}: no such folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def images(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

    if not classes:
        found = images(root)
        if not found:
            raise DataError(f"--data images:{directory} holds no image ({', '.join(IMAGE_SUFFIXES)}) and no class "
                            "sub-folder")
        return found, None, []
    numbered = all(c.isdigit() for c in classes)
    paths, labels = [], []
    for index, name in enumerate(classes):
        found = images(root / name)
        if not found:
            raise DataError(f"--data images:{directory}: class folder {name!r} holds no image")
        paths += found
        labels += [int(name) if numbered else index] * len(found)
    return paths, labels, classes


def _resized(image: Any, shorter: int) -> Any:
    width, height = image.size
    scale = shorter / min(width, height)
    return image.resize((max(shorter, round(width * scale)), max(shorter, round(height * scale))), resample=2)


class ImageFolderSet(Dataset):
    """Decoded, resized, cropped and normalised images (random crops and flips when ``train``)."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int] | None, data: ImageData, *, train: bool) -> None:
        self.paths, self.labels, self.data, self.train = list(paths), labels, data, train
        self.mean = torch.tensor(data.mean).view(-1, 1, 1)
        self.std = torch.tensor(data.std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Any:
        from PIL import Image, UnidentifiedImageError

        path, size = self.paths[index], self.data.image_size
        try:
            with Image.open(path) as opened:
                image = _resized(opened.convert("RGB"), round(size * 256 / 224))
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"{path} cannot be decoded as an image ({type(exc).__name__}): remove or replace it") from None
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        pixels = pixels.view(image.size[1], image.size[0], 3).permute(2, 0, 1).float() / 255.0
        height, width = pixels.shape[1:]
        if self.train:
            top, left = random.randint(0, height - size), random.randint(0, width - size)
        else:
            top, left = (height - size) // 2, (width - size) // 2
        pixels = pixels[:, top:top + size, left:left + size]
        if self.train and random.random() < 0.5:
            pixels = pixels.flip(-1)
        x = (pixels - self.mean) / self.std
        return (x, self.labels[index]) if self.labels is not None else (x,)


def check_decodable(paths: Sequence[Path]) -> None:
    """Open every image once (headers only) so an unreadable file is named before a search starts."""
    from PIL import Image, UnidentifiedImageError

    for path in paths:
        try:
            with Image.open(path) as image:
                image.verify()
        except (OSError, UnidentifiedImageError, SyntaxError) as exc:
            raise DataError(f"{path} cannot be decoded as an image ({type(exc).__name__}): remove or replace it") \
                from None


def _seeded(worker: int) -> None:
    random.seed(torch.initial_seed() % 2**32)


def image_loaders(data: ImageData) -> tuple[tuple[DataLoader, DataLoader], list[str]]:
    """(train, validation) loaders of ``data``, and the class names (empty for a flat folder)."""
    paths, labels, classes = scan(data.path)
    if data.val is not None:
        val_paths, val_labels, val_classes = scan(data.val)
        if (labels is None) != (val_labels is None) or (classes and val_classes != classes):
            raise DataError(f"--val images:{data.val} must have the same class folders as {data.path} "
                            f"({classes or 'none'}), got {val_classes or 'none'}")
        train_paths, train_labels = paths, labels
    else:
        (train_paths, train_labels), (val_paths, val_labels) = split(paths, labels, fraction=data.val_fraction,
                                                                     seed=data.seed, where=f"--data images:{data.path}")
    check_decodable(train_paths + val_paths)
    random.seed(data.seed)
    train = DataLoader(ImageFolderSet(train_paths, train_labels, data, train=True), batch_size=data.batch_size,
                       shuffle=True, generator=torch.Generator().manual_seed(data.seed))
    val = DataLoader(ImageFolderSet(val_paths, val_labels, data, train=False), batch_size=data.batch_size)
    return (train, val), classes


def check_outputs(model: Any, loader: DataLoader, classes: list[str], where: str) -> None:
    """Refuse a labelled folder whose classes the model's outputs do not hold: numbered folders need ids below
    the output width; named ones one output per folder."""
    if not classes:
        return
    model.eval()
    with torch.inference_mode():
        width = ModelIO().select(model(next(iter(loader))[0][:1])).shape[-1]  # a Hugging Face output's logits too
    if all(c.isdigit() for c in classes):
        if max(int(c) for c in classes) >= width:
            raise DataError(f"{where}: class folder {max(classes, key=int)} is beyond the model's {width} outputs")
    elif len(classes) != width:
        raise DataError(f"{where}: {len(classes)} class folders ({classes[:4]}...) and the model has {width} outputs: "
                        f"name the folders by the model's class ids (0..{width - 1}), or use a flat folder (quality is "
                        "then agreement with the dense model)")


@dataclass(frozen=True)
class ImageSetup:
    """An image folder made ready for ``search()`` on a CNN: the loaders and what the data presets (metric,
    distillation, space); ``attrs()`` is what the study stores so ``report``/``export``/``refine`` rebuild it."""

    images: ImageData
    data: tuple[DataLoader, DataLoader]
    classes: list[str]
    metric: Any
    distill: Distillation
    io: ModelIO
    space: str = defaults.IMAGES_SPACE

    def options(self) -> dict[str, Any]:
        return {"metric": self.metric, "distill": self.distill, "io": self.io}

    def attrs(self) -> dict[str, Any]:
        return {"data": f"{IMAGES_PREFIX}{self.images.path}", "images": self.images.to_dict()}

    def summary(self) -> str:
        quality = f"accuracy over {len(self.classes)} classes" if self.classes else \
            "top-1 agreement with the dense model (no labels)"
        return (f"images {self.images.path}: {len(self.data[0].dataset)} training and {len(self.data[1].dataset)} "
                f"validation images at {self.images.image_size} px; quality = {quality}; "
                f"distillation {self.distill.describe()}")


def image_setup(model: Any, data: str | ImageData) -> ImageSetup:
    """The loaders and presets of ``images:DIR`` (or an :class:`ImageData`) for ``model``; every input error (no
    such folder, no image, an undecodable file, classes the model cannot hold) is raised before anything is
    written."""
    images = data if isinstance(data, ImageData) else ImageData(path=str(data)[len(IMAGES_PREFIX):])
    images = ImageData.from_dict({**images.to_dict(), "path": str(Path(images.path).resolve()),
                                  "val": str(Path(images.val).resolve()) if images.val else None})
    loaders, classes = image_loaders(images)
    check_outputs(model, loaders[1], classes, f"--data images:{images.path}")
    return ImageSetup(images, loaders, classes, **presets(model, labelled=bool(classes)))


def presets(model: Any, *, labelled: bool) -> dict[str, Any]:
    """What an image folder presets for ``model`` (``metric``, ``distill``, ``io``): accuracy and distillation
    beside the labels, or (no labels) agreement with the dense model and distillation alone."""
    if labelled:
        return {"metric": None, "distill": Distillation(kind="kl"), "io": ModelIO()}
    unlabelled = ModelIO(target=None)
    return {"metric": TopOneAgreement(copy.deepcopy(model).eval(), unlabelled),
            "distill": Distillation(weight=1.0, kind="kl"), "io": unlabelled}
