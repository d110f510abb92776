"""Training data whose order and augmentations a resumed run reproduces exactly.

The augmentations draw from the data-loader workers' random streams, which a resumed run
restarts. Here the samplers yield each index as a :class:`SampleKey` carrying its own seed,
and :class:`SeededDataset` loads and augments each sample under it, so a sample's crops and
flips do not depend on which worker loads it, whether workers persist, or a resume.
"""
from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
from mmengine.dataset import DefaultSampler, InfiniteSampler
from mmengine.registry import DATA_SAMPLERS, DATASETS
from torch.utils.data import Dataset


def sample_seed(*entropy: int) -> int:
    """A 32-bit seed from integers (seed, epoch, position...), well mixed by NumPy."""
    return int(np.random.SeedSequence([int(e) % (1 << 63) for e in entropy])
               .generate_state(1)[0])


class SampleKey(int):
    """A dataset index that carries the seed of its sample's augmentations.

    It is an ``int`` (batch samplers and ``get_data_info`` use it as one) and pickles to the
    data-loader workers with its seed.
    """

    def __new__(cls, index: int, seed: int) -> 'SampleKey':
        key = super().__new__(cls, index)
        key.seed = seed
        return key

    def __reduce__(self) -> tuple:
        return SampleKey, (int(self), self.seed)


@DATA_SAMPLERS.register_module()
class SeededDefaultSampler(DefaultSampler):
    """MMEngine's ``DefaultSampler``, yielding :class:`SampleKey` seeded by (seed, epoch,
    rank, position). Same arguments, same order."""

    def __iter__(self) -> Iterator[SampleKey]:
        for position, index in enumerate(super().__iter__()):
            yield SampleKey(index, sample_seed(self.seed, self.epoch, self.rank, position))


@DATA_SAMPLERS.register_module()
class SeededInfiniteSampler(InfiniteSampler):
    """MMEngine's ``InfiniteSampler``, yielding :class:`SampleKey` seeded by (seed, position
    in the endless stream of all ranks). Same arguments, same order."""

    def _infinite_indices(self) -> Iterator[SampleKey]:
        for position, index in enumerate(super()._infinite_indices()):
            yield SampleKey(index, sample_seed(self.seed, position))


@DATASETS.register_module()
class SeededDataset(Dataset):
    """Wrap a dataset so that each :class:`SampleKey` seeds Python's, NumPy's and torch's
    generators while its sample loads (they are restored after); the rest is the dataset's.

    Args:
        dataset: The dataset, or its config (built in the current toolbox's scope).
    """

    def __init__(self, dataset: Dataset | dict) -> None:
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def metainfo(self) -> dict:
        return self.dataset.metainfo

    def __getattr__(self, name: str):
        if name == 'dataset':  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key: int) -> object:
        if not isinstance(key, SampleKey):
            return self.dataset[key]
        states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
        random.seed(key.seed)
        np.random.seed(key.seed)
        torch.manual_seed(key.seed)
        try:
            return self.dataset[int(key)]
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.random.set_rng_state(states[2])
