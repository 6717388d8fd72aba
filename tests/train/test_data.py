"""Data modules: deterministic digits split, seeded augmentation, sharding and mid-epoch resume of the loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from linzoo.train.data import (
    DigitsDataModule,
    EvalShardSampler,
    ImageFolderDataModule,
    ResumableDataLoader,
    ResumableSampler,
    load_digits_images,
)


def test_digits_are_real_and_split_deterministically() -> None:
    images, labels = load_digits_images(32)
    assert images.shape == (1797, 32, 32) and images.dtype == np.uint8
    assert np.bincount(labels).tolist()[:3] == [178, 182, 177]  # sklearn's digits class counts
    a, b = DigitsDataModule(), DigitsDataModule()
    a.setup()
    b.setup()
    assert len(a.train_set) + len(a.val_set) == 1797 and 350 < len(a.val_set) < 370
    x, y = a.val_set[5]
    assert x.shape == (3, 32, 32) and isinstance(y, int)
    torch.testing.assert_close(x, b.val_set[5][0])


def test_augmentation_is_seeded_per_sample() -> None:
    dm = DigitsDataModule(scale=(0.3, 1.0))
    dm.setup()
    first = dm.train_set[(7, 123)][0]
    torch.testing.assert_close(dm.train_set[(7, 123)][0], first)  # same seed, same crop
    assert not torch.equal(dm.train_set[(7, 124)][0], first)  # another seed, another crop
    state = torch.get_rng_state()
    dm.train_set.__getitems__([(1, 1), (2, 2)])
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left untouched


def test_shards_union_is_the_single_process_batch() -> None:
    data = list(range(100))
    single = list(ResumableSampler(data, num_replicas=1, rank=0, seed=5))
    shards = [list(ResumableSampler(data, num_replicas=2, rank=r, seed=5)) for r in (0, 1)]
    batch = 8
    for step in range(3):
        union = (
            shards[0][step * batch // 2 : (step + 1) * batch // 2]
            + shards[1][step * batch // 2 : (step + 1) * batch // 2]
        )
        assert sorted(union) == sorted(single[step * batch : (step + 1) * batch])
    evals = [list(EvalShardSampler(list(range(11)), num_replicas=2, rank=r)) for r in (0, 1)]
    assert sorted(evals[0] + evals[1]) == list(range(11))  # no padding: every image once


def test_loader_resumes_mid_epoch() -> None:
    data = [(torch.tensor(float(i)), i) for i in range(40)]

    class Indexed(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(data)

        def __getitem__(self, key):
            return data[key[0]]

    def loader(position: int | None = None) -> ResumableDataLoader:
        sampler = ResumableSampler(Indexed(), seed=1)
        sampler.set_epoch(2)
        return ResumableDataLoader(
            Indexed(), sampler=sampler, batch_size=4, position_fn=(lambda: position) if position is not None else None
        )

    full = [b[1].tolist() for b in loader()]
    assert len(full) == 10
    resumed = loader(position=3)
    assert [b[1].tolist() for b in resumed] == full[3:]
    # Lightning's stateful-loader path: state_dict counts the batches that left the loader
    lo = loader()
    it = iter(lo)
    next(it), next(it)
    state = lo.state_dict()
    assert state == {"epoch": 2, "batches": 2}
    fresh = loader()
    fresh.load_state_dict(state)
    assert [b[1].tolist() for b in fresh] == full[2:]


def test_image_folder(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((40, 50, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    dm = ImageFolderDataModule(root=str(tmp_path), batch_size=2, num_workers=0, input_size=32)
    dm.setup()
    assert dm.classes == ["cat", "dog"] and dm.num_classes == 2
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 32, 32) and y.shape == (2,)
    with pytest.raises(ValueError, match="batch_size=64"):
        ImageFolderDataModule(root=str(tmp_path), batch_size=64).setup()
