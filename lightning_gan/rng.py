"""Random streams that survive a resume: the training step's own, and the global ones around it."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def rng_states() -> dict:
    """The global RNG states of torch (CPU and the current CUDA device), numpy and Python, as tensors and
    plain Python values, so that a checkpoint holding them still loads with ``torch.load(weights_only=True)``.

    Lightning saves none of them (and its own ``_collect_rng_states`` keeps numpy's state as an ndarray). Only
    the current CUDA device's state is kept: under DDP each rank restores it into its own device, where a list
    of every device's state, as rank 0 saw them, would give rank r the state of cuda:r before it was used.
    """
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, state, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "torch.cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": [version, list(state), python_gauss],
    }


def set_rng_states(states: dict) -> None:
    """Restores what :func:`rng_states` returned; the CUDA state goes to the current device."""
    torch.set_rng_state(states["torch"])
    cuda = states.get("torch.cuda")
    if isinstance(cuda, list):  # written before the current device alone was kept: rank 0's own state
        cuda = cuda[0] if cuda else None
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda)
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, state, python_gauss = states["python"]
    random.setstate((version, tuple(state), python_gauss))


class StepRNG:
    """The random stream of a training step, owned by the module and carried by its checkpoints.

    Every draw inside ``with step_rng(device):`` (latent vectors, asked classes, the gradient penalty's
    interpolation, dropout in G or D) comes from this stream: the block runs in ``torch.random.fork_rng`` with
    the stream's saved state, which it saves again on the way out, and the global state outside is left as it
    was. Nothing outside the step (a validation pass at an epoch's end, a new DataLoader iterator, a callback)
    can move it, so a run resumed from any checkpoint draws what the uninterrupted run drew. The first step of
    a run seeds it from the global RNG (``seed_everything`` makes that repeatable). The CUDA state is the
    current device's; every DDP rank keeps an identical stream, so each restores the saved one into its own
    device.

    Example:
        >>> rng = StepRNG()
        >>> with rng(torch.device("cpu")):
        ...     a = torch.rand(1)
        >>> state = rng.state_dict()
        >>> with rng(torch.device("cpu")):
        ...     b = torch.rand(1)
        >>> rng.load_state_dict(state)
        >>> with rng(torch.device("cpu")):
        ...     torch.equal(torch.rand(1), b)
        True
    """

    def __init__(self) -> None:
        self.state: dict | None = None

    @contextmanager
    def __call__(self, device: torch.device) -> Iterator[None]:
        cuda = device.type == "cuda"
        if cuda and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        with torch.random.fork_rng(devices=[device] if cuda else []):
            if self.state is None:
                seed = int(torch.randint(0, 2**62, (1,)))  # inside the fork: the outside stream stays put
                torch.random.default_generator.manual_seed(seed)
                if cuda:
                    torch.cuda.default_generators[device.index].manual_seed(seed)
            else:
                torch.set_rng_state(self.state["cpu"])
                if cuda and self.state.get("cuda") is not None:
                    torch.cuda.set_rng_state(self.state["cuda"], device)
            try:
                yield
            finally:
                self.state = {
                    "cpu": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(device) if cuda else None,
                }

    def state_dict(self) -> dict | None:
        return None if self.state is None else dict(self.state)

    def load_state_dict(self, state: dict | None) -> None:
        self.state = None if state is None else dict(state)
