"""collate_images: uint8 items are scaled once, in the batch; in a DataLoader worker the batch is built in
shared memory, as default_collate builds its own (a worker that allocated a new batch-sized buffer per batch
grew its heap by about 100 MB over 200 batches of 128 64x64 RGB images: benchmarks/data_throughput.py)."""

import re

import pytest
import torch
from torch.utils.data import DataLoader

from lightning_gan.data.samples import collate_images


def items(n: int, dtype: torch.dtype = torch.uint8) -> list[tuple[torch.Tensor, int]]:
    if dtype == torch.uint8:
        return [(torch.randint(0, 256, (3, 4, 4), dtype=torch.uint8), i) for i in range(n)]
    return [(torch.rand(3, 4, 4) * 2 - 1, i) for i in range(n)]


def test_uint8_items_are_scaled_in_the_batch_and_float_items_pass_through():
    pixels, floats = items(3), items(2, torch.float32)
    batch, labels = collate_images(pixels + floats)
    expected = torch.cat(
        [torch.stack([x for x, _ in pixels]).float() / 127.5 - 1, torch.stack([x for x, _ in floats])]
    )
    assert torch.equal(batch, expected) and batch.dtype == torch.float32
    assert labels.tolist() == [0, 1, 2, 0, 1] and labels.dtype == torch.int64
    with pytest.raises(ValueError, match=re.escape("a batch mixes images of shapes (3, 4, 4) and (3, 5, 5)")):
        collate_images([*pixels, (torch.zeros(3, 5, 5, dtype=torch.uint8), 0)])


def shared_in_worker(batch_items):
    images, _ = collate_images(batch_items)
    return images.is_shared()


def test_a_worker_builds_its_batches_in_shared_memory():
    assert not collate_images(items(2))[0].is_shared()  # in the main process: plain memory
    loader = DataLoader(items(8), batch_size=4, num_workers=1, collate_fn=shared_in_worker)
    assert list(loader) == [True, True]
