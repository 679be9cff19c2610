"""Training and evaluation from LitData shards (``data.format=litdata``): written by ``src.prepare``,
read locally or from ``s3://`` with litdata's ``StreamingDataset`` / ``StreamingDataLoader``.

litdata does what a cluster needs and a folder cannot: each DDP rank (and each loader worker)
reads its own part of the chunks, shuffling is seeded and spans chunks, remote chunks are
downloaded ahead into a local cache, and ``StreamingDataLoader.state_dict`` records the position
in the epoch, which Lightning saves in checkpoints and restores on resume (it does so for every
loader with ``state_dict``/``load_state_dict``). The images are decoded by :func:`load_rgb`, as for a
folder, and go through the same transforms, so a model sees the same pixels from either.
"""

from __future__ import annotations

import io
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from litdata import StreamingDataLoader, StreamingDataset
from torch.utils.data import Dataset

from src.data.loading.dataset import multi_hot
from src.data.files.listing import Sample
from src.data.files.image_reader import load_rgb
from src.data.shards.manifest import join


def item_target(label: Any, num_labels: int | None) -> int | torch.Tensor:
    """A stored label as the model's target: a class index, or for multi-label (an array of class indices)
    the multi-hot vector :func:`multi_hot` makes from a folder's sample."""
    if num_labels is None:
        return int(label)
    return multi_hot(tuple(int(i) for i in np.asarray(label).ravel()), num_labels)


def read_item(dataset: StreamingDataset, index: int) -> dict[str, Any]:
    """Item ``index`` of ``dataset`` as stored (no transform), its whole chunk read into the cache.

    Random access (show_batch, top losses, evaluation) goes through a one-item slice: litdata reads
    a slice's chunks whole, while ``dataset[index]`` from ``s3://`` reads byte ranges of the chunk
    (``on_demand_bytes``), which with litdata 0.2.76 came back empty from moto's S3 server (the
    tests'); a whole chunk also serves the next random reads from the cache.
    """
    (item,) = StreamingDataset.__getitem__(dataset, slice(index, index + 1))
    return item


@dataclass(frozen=True)
class DecodeItem:
    """A stored item to ``(image tensor, target)``: litdata's ``transform`` hook (a picklable object,
    as it runs in the loader's worker processes)."""

    transform: Callable
    num_labels: int | None = None
    decode_size: int | None = None  # JPEGs decode at reduced scale down to this (load_rgb's min_size)

    def __call__(self, item: dict[str, Any]) -> tuple[torch.Tensor, int | torch.Tensor]:
        image = load_rgb(io.BytesIO(item["image"]), min_size=self.decode_size)
        return self.transform(image), item_target(item["label"], self.num_labels)


class ShardDataset(StreamingDataset):
    """``(image tensor, target)`` of each item of the training shards (``ROOT/train``), streamed: each
    DDP rank and loader worker reads its own chunks, shuffled across chunks.

    Shards were checked when written (unreadable files were left out then), so an item that does
    not decode is an error, not a file to skip; ``failures`` is there for the run's report, as on
    :class:`~src.data.loading.dataset.ImageDataset`, and stays 0.
    """

    def __init__(self, root: str, subset: str, transform: Callable, *, shuffle: bool, seed: int,
                 num_labels: int | None = None, decode_size: int | None = None, drop_last: bool = False,
                 cache_dir: str | None = None) -> None:
        self.decode = DecodeItem(transform, num_labels, decode_size)
        super().__init__(join(root, subset), shuffle=shuffle, seed=seed, drop_last=drop_last, cache_dir=cache_dir,
                         transform=self.decode)
        self.subset = subset
        self.failures = multiprocessing.Value("i", 0)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int):  # random access, not the loader's iteration (see read_item)
            return self.decode(read_item(self, index))
        return super().__getitem__(index)

    def use_transform(self, transform: Callable, decode_size: int | None) -> None:
        """Decode and transform at another size from now on (a progressive-resizing stage); litdata's
        own ``transform`` is the decoder, so this one is not replaced by the image transform."""
        self.decode = self.transform = replace(self.decode, transform=transform, decode_size=decode_size)


def shard_loader(dataset: ShardDataset, *, batch_size: int, num_workers: int, pin_memory: bool,
                 drop_last: bool, worker_init_fn: Callable[[int], None] | None = None) -> StreamingDataLoader:
    """The loader of a :class:`ShardDataset`: stateful, so Lightning checkpoints its place in the epoch."""
    return StreamingDataLoader(dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                               drop_last=drop_last, worker_init_fn=worker_init_fn)


class ShardSubset(Dataset):
    """One subset's shards as a map-style dataset in stored order, for validation and evaluation:
    ``samples()`` and the loader's batches line up (a streaming loader interleaves its workers'
    items), and under DDP Lightning's ``DistributedSampler`` gives every rank the same number of
    batches. Streamed, litdata gives each rank whole chunks, so a validation set of one chunk left
    the other ranks with no batch, which Lightning refuses ("has zero length"); with uneven counts
    the ranks' metric reductions would not pair up."""

    def __init__(self, root: str, subset: str, transform: Callable, *, num_labels: int | None = None,
                 decode_size: int | None = None, cache_dir: str | None = None) -> None:
        self.items = StreamingDataset(join(root, subset), shuffle=False, cache_dir=cache_dir)
        self.decode = DecodeItem(transform, num_labels, decode_size)
        self.failures = multiprocessing.Value("i", 0)  # as ShardDataset's: stays 0

    def use_transform(self, transform: Callable, decode_size: int | None) -> None:
        """Decode and transform at another size from now on (a progressive-resizing stage)."""
        self.decode = replace(self.decode, transform=transform, decode_size=decode_size)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        return self.decode(read_item(self.items, index))

    def samples(self, source_root: Path) -> list[Sample]:
        """Each item's path (under ``source_root``, the folder the shards were written from) and label."""
        samples = []
        for i in range(len(self.items)):
            item = read_item(self.items, i)
            label = item["label"]
            label = tuple(int(c) for c in np.asarray(label).ravel()) if self.decode.num_labels is not None else int(label)
            samples.append(Sample(source_root / item["path"], label))
        return samples
