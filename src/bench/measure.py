"""The two reference speeds the training run is compared with.

- :func:`floor_speed`: a bare PyTorch loop (forward, loss, backward, optimiser step) on one batch
  already in memory, with the run's model, optimiser, parameter groups, frozen set, batch size,
  image size, precision and memory format: what the hardware gives with no framework and no data.
- :func:`data_speed`: the training data pipeline alone (decode, resize, augment, collate) in one
  process with one thread, which is what one DataLoader worker gets.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from src.core.hardware import synchronize
from src.models.classifier_module import ImageClassifierModule
from src.optim.freezing import freeze_layer_groups

AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


@dataclass(frozen=True)
class Speed:
    images_per_s: float
    images: int
    seconds: float
    warmup_s: float  # the steps before the measured window (compilation, allocator, autotuning)
    cpu_s: float = 0.0  # CPU seconds of this process (all its threads) in the measured window

    def as_dict(self) -> dict:
        return asdict(self)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context Lightning's precision plugin uses for ``precision`` (none for 32-true)."""
    if str(precision) in ("32-true", "32"):
        return contextlib.nullcontext()
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"the benchmark's bare loop runs 32-true, bf16-mixed or 16-mixed, not {precision!r}")
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


def _timed(step: Callable[[], None], warmup: int, steps: int, images_per_step: int, device: torch.device) -> Speed:
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    synchronize(device)
    measured, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    synchronize(device)
    seconds = time.perf_counter() - measured
    return Speed(images_per_step * steps / seconds, images_per_step * steps, seconds, measured - start,
                 time.process_time() - cpu)


def floor_speed(
    module: ImageClassifierModule,
    batch_size: int,
    size: int,
    precision: str,
    device: torch.device,
    channels_last: bool = False,
    compile: bool = False,
    warmup: int = 2,
    steps: int = 10,
) -> Speed:
    """Training images/second of ``module``'s network in a bare loop (see the module docstring).

    The network is frozen as the first stage freezes it, and trained in place (pass a fresh module).
    """
    if warmup < 1 or steps < 1:
        raise ValueError(f"bench.warmup_steps and bench.steps must be >= 1, got {warmup} and {steps}")
    freeze_layer_groups(module.net.layer_groups(), module.schedule.stages[0].freeze_to, module.schedule.train_bn)
    net: nn.Module = module.net.to(device).train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net.to(memory_format=memory_format)
    optimizer = module.layer_group_optimizer()
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")
    forward = torch.compile(net) if compile else net
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, size, size, generator=generator).to(device, memory_format=memory_format)
    num_classes = len(module.classes)
    if module.hparams.get("multi_label"):  # multi-hot float targets, as BCE-with-logits takes them
        labels = (torch.rand(batch_size, num_classes, generator=generator) < 0.5).float().to(device)
    else:
        labels = torch.randint(num_classes, (batch_size,), generator=generator).to(device)

    def step() -> None:
        with autocast(precision, device):
            loss = module.criterion(forward(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return _timed(step, warmup, steps, batch_size, device)


@contextlib.contextmanager
def _threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def data_speed(dataset: Dataset, batch_size: int, warmup: int = 1, batches: int = 10, seed: int = 0,
               collate_fn: Callable | None = None) -> Speed:
    """Images/second of one loader worker: ``dataset``'s items batched by ``collate_fn`` (PyTorch's default
    collate when None; ``data.decode_on=device`` batches JPEG bytes its own way), in this process with one
    thread (as DataLoader runs each worker)."""
    if warmup < 0 or batches < 1:
        raise ValueError(f"bench.data_batches must be >= 1, got {batches}")
    needed = (warmup + batches) * batch_size
    if len(dataset) < needed:
        raise ValueError(
            f"the data benchmark reads {warmup + batches} batches of {batch_size} = {needed} images, the training "
            f"set has {len(dataset)}; lower bench.data_batches or data.batch_size"
        )
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0, collate_fn=collate_fn,
                        generator=torch.Generator().manual_seed(seed))
    batches_iter = iter(loader)
    with _threads(1):
        return _timed(lambda: next(batches_iter), warmup, batches, batch_size, torch.device("cpu"))


def augment_speed(prepare: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, batch_size: int,
                  device: torch.device, batches: int = 5, seed: int = 0) -> Speed:
    """Images/second of ``prepare`` (``data.augment.on=device``'s batch augmentation) on ``device``, on
    uint8 batches of ``dataset`` already there: what the training process spends per image on top of
    the workers' part."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0,
                        generator=torch.Generator().manual_seed(seed))
    batch = next(iter(loader))[0].to(device)
    return _timed(lambda: prepare(batch), 1, batches, len(batch), device)
