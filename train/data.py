"""Image-classification data: ImageNet-style folders and the embedded scikit-learn digits.

Both data modules share one code path: a base dataset of ``(PIL image, label)`` pairs, timm's
``create_transform`` built from the model's data config (input size, mean/std, interpolation, crop_pct)
plus the module's augmentation settings, and a resumable training loader.

Exact resume. The training sampler is a :class:`~torch.utils.data.DistributedSampler` (so Lightning keeps it
under DDP instead of wrapping it) that yields ``(index, sample_seed)`` pairs; every random augmentation of a
sample runs under a generator seeded by ``(seed, epoch, index)``, so a sample looks the same whatever the
number of workers, processes or the order of fetching. The training :class:`ResumableDataLoader` implements
``state_dict`` / ``load_state_dict`` (Lightning stores it in every checkpoint) and asks the trainer how many
batches of the current epoch were already run (restored from the checkpoint): a run killed mid-epoch
continues with the very next batch of the same permutation.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler

__all__ = [
    "DigitsDataModule",
    "EvalShardSampler",
    "ImageClassificationDataModule",
    "ResumableDataModule",
    "ImageFolderDataModule",
    "ResumableDataLoader",
    "ResumableSampler",
    "SeededTransformDataset",
    "derive_seed",
    "load_digits_images",
]

_IMAGENET_LAYOUT = (
    "an ImageNet-style folder: ROOT/{train}/<class>/<image> and ROOT/{val}/<class>/<image> "
    "(one sub-folder per class, the same class names in both splits; ImageNet's val images must be sorted "
    "into class folders first)"
)


def derive_seed(*parts: int) -> int:
    """A 32-bit seed mixed from integers (stable across processes and Python runs, unlike ``hash``)."""
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF


@contextlib.contextmanager
def _preserved_rngs() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's CPU generators after the block."""
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    torch_state = torch.default_generator.get_state()
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002
        torch.default_generator.set_state(torch_state)


def _seed_rngs(seed: int) -> None:
    # timm's and torchvision's transforms draw from the global generators (hence NumPy's legacy API)
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002
    torch.default_generator.manual_seed(seed)


class SeededTransformDataset(Dataset):
    """Apply ``transform`` to the images of ``base`` (a dataset of ``(PIL image, label)``).

    Indexing with ``(index, seed)`` (what :class:`ResumableSampler` yields) runs the transform with the global
    generators seeded by ``seed``; a plain integer index uses ``derive_seed(index)``. The generators' states are
    restored afterwards (once per batch through ``__getitems__``: saving NumPy's state costs ~0.2 ms).
    """

    def __init__(self, base: Dataset, transform: Callable[[Image.Image], torch.Tensor] | None) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def _get(self, key: int | tuple[int, int]) -> tuple[Any, int]:
        index, seed = key if isinstance(key, tuple) else (key, derive_seed(key))
        image, label = self.base[index]
        if self.transform is not None:
            _seed_rngs(seed)
            image = self.transform(image)
        return image, label

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, int]:
        with _preserved_rngs():
            return self._get(key)

    def __getitems__(self, keys: Sequence[int | tuple[int, int]]) -> list[tuple[Any, int]]:
        with _preserved_rngs():
            return [self._get(key) for key in keys]


class ResumableSampler(DistributedSampler):
    """Per-epoch shuffled (optionally sharded) indices, yielded as ``(index, sample_seed)``.

    Being a ``DistributedSampler``, Lightning leaves it in place under DDP (it would otherwise wrap a custom
    sampler). ``num_replicas`` / ``rank`` are given explicitly (1 / 0 in a single process); rank ``r`` takes
    positions ``r, r + R, ...`` of the epoch's permutation, so the union of the ranks' i-th batches of size
    ``b`` is the single-process batch of size ``R * b``.
    """

    def __init__(
        self, dataset: Dataset, *, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.start = 0  # positions of this epoch to skip (set when resuming mid-epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())
        start, self.start = self.start, 0
        for index in indices[start:]:
            yield index, derive_seed(self.seed, self.epoch, index)


class EvalShardSampler(DistributedSampler):
    """In-order evaluation shards without padding: rank ``r`` of ``R`` gets indices ``r, r + R, ...``.

    Lightning's default distributed sampler pads the last shard with repeated images, which changes the
    accuracy; unequal shards are fine for evaluation (metrics are only reduced at the end of the epoch).
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))  # type: ignore[arg-type]


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over a :class:`ResumableSampler` that starts where an interrupted epoch stopped.

    Where to start comes from ``position_fn`` (the data modules pass the trainer's count of batches already
    done in the current epoch, which Lightning restores from the checkpoint), else from ``load_state_dict``.
    Both are needed: Lightning stores ``state_dict()`` in each checkpoint and calls ``load_state_dict()`` only
    if the train loader is created after the checkpoint was restored, which a ``configure_optimizers`` that
    reads ``trainer.estimated_stepping_batches`` (as timm's schedulers need) prevents.
    The batch counter is taken where batches leave the loader, so worker prefetching does not shift it.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        sampler: ResumableSampler,
        position_fn: Callable[[], int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, sampler=sampler, drop_last=True, **kwargs)
        self.position_fn = position_fn
        self._batches_yielded = 0
        self._loaded: tuple[int, int] | None = None

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        # A generator: nothing (not even the workers' first indices) is drawn before the first ``next``,
        # i.e. after Lightning has restored the loop state and called ``sampler.set_epoch``.
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        skip = self.position_fn() if self.position_fn is not None else 0
        if self._loaded is not None:
            epoch, loaded = self._loaded
            self._loaded = None
            if epoch != sampler.epoch or (self.position_fn is not None and loaded != skip):
                raise RuntimeError(
                    f"the checkpoint's train-loader position (epoch {epoch}, batch {loaded}) does not match the "
                    f"trainer's (epoch {sampler.epoch}, batch {skip})"
                )
            skip = loaded
        if not 0 <= skip < len(self):
            skip = 0
        sampler.start = skip * self.batch_size  # type: ignore[operator]
        self._batches_yielded = skip
        for batch in super().__iter__():
            self._batches_yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.sampler.epoch), "batches": int(self._batches_yielded)}  # type: ignore[attr-defined]

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        batches = int(state_dict["batches"])
        if 0 < batches < len(self):
            self._loaded = (int(state_dict["epoch"]), batches)
            self.sampler.set_epoch(int(state_dict["epoch"]))  # type: ignore[attr-defined]


class _DigitsImages(Dataset):
    """``(PIL RGB image, label)`` pairs from an ``(N, H, W)`` uint8 array."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]).convert("RGB"), int(self.labels[index])


def load_digits_images(image_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits (1797 real 8×8 images, values 0–16, labels 0–9), upsampled.

    Returns ``(images, labels)``: uint8 ``(1797, image_size, image_size)`` (bicubic) and int64 ``(1797,)``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    raw = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    images = np.stack([np.asarray(Image.fromarray(im).resize((image_size, image_size), Image.BICUBIC)) for im in raw])
    return images, digits.target.astype(np.int64)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) == 3:
        size = size[1:]
    if len(size) != 2:
        raise ValueError(f"input_size must be an int, (H, W) or (C, H, W), got {size}")
    return size  # type: ignore[return-value]


class ResumableDataModule(pl.LightningDataModule):
    """Distributed, resumable loaders shared by the classification and detection data modules.

    Subclasses set ``batch_size``, ``num_workers``, ``pin_memory``, ``seed``, ``train_set`` and ``val_set``
    (in ``setup``) and may override :meth:`_collate_fn`. Training uses :class:`ResumableSampler` (the
    epoch's order from the seed; a resumed run continues mid-epoch), evaluation :class:`EvalShardSampler`.
    """

    def _collate_fn(self) -> Any:
        """The loaders' ``collate_fn`` (None: PyTorch's default)."""
        return None

    def _resolved_seed(self) -> int:
        return int(self.seed if self.seed is not None else os.environ.get("PL_GLOBAL_SEED", 0))

    def _world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    def _loader_kwargs(self) -> dict[str, Any]:
        kwargs = dict(
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )
        if self._collate_fn() is not None:
            kwargs["collate_fn"] = self._collate_fn()
        return kwargs

    def train_dataloader(self) -> ResumableDataLoader:
        assert self.train_set is not None, "call setup() first"
        replicas, rank = self._world()
        sampler = ResumableSampler(self.train_set, num_replicas=replicas, rank=rank, seed=self._resolved_seed())
        return ResumableDataLoader(
            self.train_set, sampler=sampler, position_fn=self._batches_done_in_epoch, **self._loader_kwargs()
        )

    def _batches_done_in_epoch(self) -> int:
        """Training batches the trainer has already run in its current epoch (restored when resuming)."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return 0
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None, "call setup() first"
        replicas, rank = self._world()
        sampler = EvalShardSampler(self.val_set, num_replicas=replicas, rank=rank)
        return DataLoader(self.val_set, sampler=sampler, **self._loader_kwargs())

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()


class ImageClassificationDataModule(ResumableDataModule):
    """Shared logic: timm transforms from the model's data config, seeded augmentation, resumable loading.

    Subclasses implement :meth:`build_datasets`. Settings left ``None`` (input size, mean/std,
    interpolation, crop_pct) come from the LightningModule's ``data_config`` (timm's
    ``resolve_model_data_config``) when the trainer has one, else from ImageNet defaults.

    Args:
        batch_size: images per process and step (the global batch is ``batch_size × devices × nodes``;
            with ``accumulate_grad_batches`` the optimizer sees that many times more).
        num_workers: loader worker processes (``persistent_workers`` is used when > 0).
        seed: seed of the shuffling and augmentation streams (None: Lightning's ``seed_everything`` value).
        input_size / mean / std / interpolation / crop_pct: preprocessing overrides.
        scale / ratio / hflip / vflip / color_jitter / auto_augment / re_prob / re_mode / re_count:
            timm ``create_transform`` training augmentation (RandomResizedCrop, flips, jitter, RandAugment
            such as ``"rand-m9-mstd0.5-inc1"``, random erasing).
    """

    def __init__(
        self,
        batch_size: int = 128,
        num_workers: int = 4,
        seed: int | None = None,
        pin_memory: bool = True,
        input_size: int | tuple[int, int] | None = None,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        interpolation: str | None = None,
        crop_pct: float | None = None,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        hflip: float = 0.5,
        vflip: float = 0.0,
        color_jitter: float = 0.4,
        auto_augment: str | None = None,
        re_prob: float = 0.0,
        re_mode: str = "pixel",
        re_count: int = 1,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.pin_memory = pin_memory
        self.input_size = None if input_size is None else _pair(input_size)
        self.mean, self.std = mean, std
        self.interpolation, self.crop_pct = interpolation, crop_pct
        self.augment = dict(
            scale=tuple(scale),
            ratio=tuple(ratio),
            hflip=hflip,
            vflip=vflip,
            color_jitter=color_jitter,
            auto_augment=auto_augment,
            re_prob=re_prob,
            re_mode=re_mode,
            re_count=re_count,
        )
        self.classes: list[str] = []
        self.train_set: SeededTransformDataset | None = None
        self.val_set: SeededTransformDataset | None = None

    # -- to implement ---------------------------------------------------------------------------------
    def build_datasets(self) -> tuple[Dataset, Dataset, list[str]]:
        """Return ``(train, val, class_names)``; the datasets yield ``(PIL image, label)`` (defined by each subclass:
        image folders, the digits demo)."""
        raise NotImplementedError(f"{type(self).__name__} must define build_datasets()")

    # -- shared ---------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def data_config(self) -> dict[str, Any]:
        """The preprocessing in effect: the model's timm data config overridden by this module's settings."""
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        cfg: dict[str, Any] = {
            "input_size": (3, 224, 224),
            "interpolation": "bicubic",
            "mean": IMAGENET_DEFAULT_MEAN,
            "std": IMAGENET_DEFAULT_STD,
            "crop_pct": 0.875,
            "crop_mode": "center",
        }
        module = self.trainer.lightning_module if self.trainer is not None else None
        cfg.update(getattr(module, "data_config", None) or {})
        if self.input_size is not None:
            cfg["input_size"] = (3, *self.input_size)
        for key in ("mean", "std", "interpolation", "crop_pct"):
            if getattr(self, key) is not None:
                cfg[key] = getattr(self, key)
        return cfg

    def build_transforms(self) -> tuple[Callable, Callable]:
        """``(train_transform, eval_transform)`` from timm's ``create_transform``."""
        from timm.data import create_transform

        cfg = self.data_config()
        common = dict(
            input_size=cfg["input_size"], interpolation=cfg["interpolation"], mean=cfg["mean"], std=cfg["std"]
        )
        train = create_transform(is_training=True, **common, **self.augment)
        val = create_transform(is_training=False, crop_pct=cfg["crop_pct"], crop_mode=cfg.get("crop_mode"), **common)
        return train, val

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, val, self.classes = self.build_datasets()
        module = self.trainer.lightning_module if self.trainer is not None else None
        model_classes = getattr(module, "num_classes", None)
        if model_classes is not None and model_classes != self.num_classes:
            raise ValueError(
                f"model.num_classes={model_classes} but the data has {self.num_classes} classes; "
                f"set --model.init_args.num_classes {self.num_classes}"
            )
        train_tf, val_tf = self.build_transforms()
        self.train_set = SeededTransformDataset(train, train_tf)
        self.val_set = SeededTransformDataset(val, val_tf)
        if len(self.train_set) < self.batch_size * self._world()[0]:
            raise ValueError(
                f"data.batch_size={self.batch_size} x {self._world()[0]} process(es) is larger than the "
                f"{len(self.train_set)} training images"
            )


class ImageFolderDataModule(ImageClassificationDataModule):
    """ImageNet-style folders: ``root/train/<class>/*`` and ``root/val/<class>/*`` (torchvision ImageFolder).

    Args:
        root: dataset root (required).
        train_split / val_split: sub-folder names.
        (the rest as :class:`ImageClassificationDataModule`.)
    """

    def __init__(self, root: str | None = None, train_split: str = "train", val_split: str = "val", **kwargs: Any):
        super().__init__(**kwargs)
        self.root, self.train_split, self.val_split = root, train_split, val_split
        self._check_layout()

    def _check_layout(self) -> None:
        layout = _IMAGENET_LAYOUT.format(train=self.train_split, val=self.val_split)
        if not self.root:
            raise ValueError(f"data.root is not set: pass --data.init_args.root /path/to/data, {layout}")
        root = Path(self.root).expanduser()
        for split in (self.train_split, self.val_split):
            folder = root / split
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"data.root={self.root!r} has no folder {split!r} ({folder}): expected {layout}"
                )
            if not any(p.is_dir() for p in folder.iterdir()):
                raise FileNotFoundError(f"{folder} has no class sub-folders; expected {layout}")

    def build_datasets(self) -> tuple[Dataset, Dataset, list[str]]:
        from torchvision.datasets import ImageFolder

        root = Path(self.root).expanduser()  # type: ignore[arg-type]
        train = ImageFolder(str(root / self.train_split))
        val = ImageFolder(str(root / self.val_split))
        if val.classes != train.classes:
            raise ValueError(
                f"{root / self.val_split} has classes {val.classes[:5]}... that differ from "
                f"{root / self.train_split} ({train.classes[:5]}...)"
            )
        return train, val, list(train.classes)


class DigitsDataModule(ImageClassificationDataModule):
    """The embedded default: scikit-learn's 1797 real handwritten digits (shipped with the package).

    The 8×8 grey images are upsampled once (bicubic) to ``source_size`` and turned into RGB PIL images, then
    go through the same timm transforms as ImageNet folders (here at ``input_size`` 32 with crop_pct 1.0, no
    flips, since a mirrored 2 is not a 2, and by default no crop jitter, which slows a few-epoch run down).
    The split is deterministic: a fixed-seed stratified ``val_fraction`` of every class.
    """

    def __init__(
        self,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        source_size: int = 32,
        batch_size: int = 32,
        num_workers: int = 0,
        input_size: int | tuple[int, int] | None = 32,
        crop_pct: float | None = 1.0,
        interpolation: str | None = "bicubic",
        scale: tuple[float, float] = (1.0, 1.0),
        ratio: tuple[float, float] = (1.0, 1.0),
        hflip: float = 0.0,
        color_jitter: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            num_workers=num_workers,
            input_size=input_size,
            crop_pct=crop_pct,
            interpolation=interpolation,
            scale=scale,
            ratio=ratio,
            hflip=hflip,
            color_jitter=color_jitter,
            **kwargs,
        )
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
        self.val_fraction, self.split_seed, self.source_size = val_fraction, split_seed, source_size

    def build_datasets(self) -> tuple[Dataset, Dataset, list[str]]:
        images, labels = load_digits_images(self.source_size)
        rng = np.random.default_rng(self.split_seed)
        val_idx = []
        for c in range(10):
            members = np.flatnonzero(labels == c)
            val_idx.append(rng.permutation(members)[: round(len(members) * self.val_fraction)])
        val_mask = np.zeros(len(labels), dtype=bool)
        val_mask[np.concatenate(val_idx)] = True
        train = _DigitsImages(images[~val_mask], labels[~val_mask])
        val = _DigitsImages(images[val_mask], labels[val_mask])
        return train, val, [str(c) for c in range(10)]
