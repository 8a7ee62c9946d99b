"""A seeded, DDP-aware sampler that resumes mid-epoch, and a loader that groups batches per GAN step."""

import itertools
import math
from collections.abc import Iterator
from typing import Any, TypedDict

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lightning_gan.validation import is_int


class SamplerState(TypedDict):
    """What :meth:`ResumableSampler.state_dict` returns."""

    epoch: int
    seed: int
    consumed: int


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``, so that callers never draw from torch's global RNG."""
    # manual_seed accepts only [-2**63, 2**64); the modulo maps any Python int into it
    return torch.Generator().manual_seed(seed % 2**63)


class ResumableSampler(Sampler[int]):
    """Shuffles by (seed, epoch) with its own generator, splits an epoch across DDP ranks, resumes mid-epoch.

    Like ``DistributedSampler``, the epoch's permutation is padded (repeating its start) to a multiple of
    ``num_replicas`` and rank ``r`` takes ``indices[r::num_replicas]``. ``consumed`` counts the samples
    of the current epoch this rank has handed out; iterating that epoch again skips them and yields the
    rest in the order an uninterrupted epoch would have.

    Args:
        num_samples: Size of the dataset.
        seed: Seeds the order together with the epoch.
        shuffle: If False, the order is ``0..num_samples-1`` every epoch.
        num_replicas: Number of DDP processes.
        rank: This process's rank, in ``[0, num_replicas)``.
        tag_epoch: Yield ``(epoch, index)`` pairs instead of indices, for datasets whose random augmentations
            are seeded per epoch and sample (:class:`~lightning_gan.data.samples.SplitDataset`).

    Example:
        >>> sampler = ResumableSampler(6, seed=1)
        >>> first = list(sampler)
        >>> sampler.set_consumed(4)
        >>> list(sampler) == first[4:]
        True
    """

    def __init__(
        self,
        num_samples: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
        tag_epoch: bool = False,
    ) -> None:
        if not is_int(num_samples) or num_samples < 1:
            raise ValueError(f"num_samples={num_samples!r} is not allowed: must be an integer >= 1")
        if not is_int(seed):
            raise ValueError(f"seed={seed!r} is not allowed: must be an integer")
        if not is_int(num_replicas) or num_replicas < 1:
            raise ValueError(f"num_replicas={num_replicas!r} is not allowed: must be an integer >= 1")
        if not is_int(rank) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank!r} is not allowed: must be an integer in [0, {num_replicas})")
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        self.tag_epoch = tag_epoch
        self.epoch = 0
        self.consumed = 0

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.num_replicas)

    def _epoch_indices(self) -> list[int]:
        """This rank's indices for the current epoch, in order."""
        if self.shuffle:
            # 1_000_003 is prime and larger than any epoch count: (seed, epoch) pairs do not collide
            generator = seeded_generator(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        total = len(self) * self.num_replicas
        # repeat the order as often as needed: with fewer samples than ranks one copy is not enough
        padded = (order * math.ceil(total / self.num_samples))[:total]
        return padded[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int | tuple[int, int]]:
        indices = self._epoch_indices()
        if self.consumed >= len(indices):
            self.consumed = 0  # a finished epoch that is read again starts over, like any sampler
        for position in range(self.consumed, len(indices)):
            # count before yielding: a consumer that stops after n next() calls has consumed n
            self.consumed = position + 1
            yield (self.epoch, indices[position]) if self.tag_epoch else indices[position]

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch's order; a different epoch starts from its beginning."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.consumed = 0

    def set_consumed(self, consumed: int) -> None:
        """Marks the first ``consumed`` samples of the current epoch as done (on this rank)."""
        if not is_int(consumed) or not 0 <= consumed <= len(self):
            raise ValueError(f"consumed={consumed!r} is not allowed: must be an integer in [0, {len(self)}]")
        self.consumed = consumed

    def state_dict(self) -> SamplerState:
        """The epoch, the seed and how many of this rank's samples of the epoch were consumed."""
        return {"epoch": self.epoch, "seed": self.seed, "consumed": self.consumed}

    def load_state_dict(self, state: SamplerState) -> None:
        """Restores :meth:`state_dict`'s output; the seed must match, else the order would differ."""
        if state["seed"] != self.seed:
            raise ValueError(f"sampler state has seed={state['seed']} but this sampler has seed={self.seed}")
        self.set_epoch(state["epoch"])
        self.set_consumed(state["consumed"])


class StepLoader:
    """Yields one training step's data: a list of ``batches_per_step`` batches, each its own ``next()``.

    A GAN with ``n_critic=5`` updates D on 5 fresh real batches per G step, so one item is one G step.
    With ``batches_per_step=None`` it yields the loader's batches unchanged. The batches left over at the
    end of an epoch that do not fill a group are dropped.

    It has no ``state_dict``: Lightning would then treat it as a stateful loader. Resume state goes through
    the data module instead.

    Args:
        loader: The DataLoader to draw batches from.
        batches_per_step: Batches per item (>= 1), or None for plain batches.
    """

    def __init__(self, loader: DataLoader, batches_per_step: int | None) -> None:
        if batches_per_step is not None and (not is_int(batches_per_step) or batches_per_step < 1):
            raise ValueError(
                f"batches_per_step={batches_per_step!r} is not allowed: must be an integer >= 1 or None"
            )
        self.loader = loader
        self.batches_per_step = batches_per_step

    @property
    def sampler(self) -> Sampler | DataLoader:
        """What Lightning calls ``set_epoch`` on at each epoch start: the loader's sampler, or the loader
        itself where it keeps the epoch (:class:`~lightning_gan.data.streaming.EpochLoader`)."""
        return self.loader if hasattr(self.loader, "set_epoch") else self.loader.sampler

    @property
    def dataset(self) -> Dataset:
        return self.loader.dataset

    @property
    def batch_size(self) -> int | None:
        return self.loader.batch_size

    def __len__(self) -> int:
        if self.batches_per_step is None:
            return len(self.loader)
        return len(self.loader) // self.batches_per_step

    def __iter__(self) -> Iterator[Any]:
        # A generator: iter(loader) runs only at the first next(). Lightning calls iter() on the loader
        # before it restores the resume state and before set_epoch, which must both reach the sampler first.
        batches = iter(self.loader)
        if self.batches_per_step is None:
            yield from batches
            return
        while len(group := list(itertools.islice(batches, self.batches_per_step))) == self.batches_per_step:
            yield group
