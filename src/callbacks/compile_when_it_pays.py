"""``model.compile``: compile a stage's training network when the stage is long enough to pay for it (``auto``),
or always (``true``).

At the start of each stage the network runs eagerly; after :attr:`skipped_steps` steps (the
loader starting, the allocator warming up) it times :attr:`timed_steps` steps, then asks
:func:`~src.core.compile_records.compile_pays` whether the stage's remaining steps would save more
than the compile warm-up costs, with the warm-up and speed-up this machine measured for the same
network shape before (:mod:`src.core.compile_records`) or, the first time, assumed ones. A
compiled stage then measures its own warm-up and compiled steps and records them, so the next run
decides with this machine's numbers. Only the training forward is compiled: validation stays eager
(compiling the eval graph too cost 17 s more cold for ResNet18 at 64 px, for a pass that is a few
percent of an epoch). ``true`` compiles every stage after the same timed eager steps (so it records
its warm-up too, and the next ``auto`` run knows it); ``false`` leaves every stage eager.

The decisions are saved in checkpoints (``state_dict``): a resumed run compiles from the same
place the uninterrupted run did, so it continues with the same kernels. Under DDP, rank 0's
timing decides for every process.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import lightning as L
from typing_extensions import override

from src.core.compile_records import (
    UNRECORDED_SPEEDUP, UNRECORDED_WARMUP_S, CompileRecord, compile_cache_dir, compile_pays, find_record,
    network_shape_key, write_record)
from src.core.hardware import synchronize

log = logging.getLogger(__name__)


class CompileWhenItPays(L.Callback):
    """See the module docstring; does nothing when the module's ``compile`` is false."""

    def __init__(self, skipped_steps: int = 1, timed_steps: int = 3) -> None:
        self.skipped_steps = skipped_steps
        self.timed_steps = timed_steps
        # stage index -> {"compile": bool, "epoch": e, "batch": b}: compiled from batch b of epoch e on
        self.decisions: dict[int, dict[str, Any]] = {}
        self._stage: int | None = None
        self._steps_in_stage = 0
        self._eager_s: list[float] = []
        self._compiled_s: list[float] = []
        self._warmup_s: float | None = None
        self._key: str | None = None
        self._started = 0.0

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"decisions": {str(stage): decision for stage, decision in self.decisions.items()}}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.decisions = {int(stage): dict(decision) for stage, decision in state_dict.get("decisions", {}).items()}

    @staticmethod
    def _active(pl_module: L.LightningModule) -> bool:
        return pl_module.hparams.get("compile") in ("auto", True)

    @override
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if not self._active(pl_module):
            return
        stage = pl_module.schedule.stage_index_at_epoch(trainer.current_epoch)
        if stage != self._stage:  # a new stage, or the first batch of this process
            self._stage, self._steps_in_stage = stage, 0
            self._eager_s, self._compiled_s, self._warmup_s = [], [], None
            pl_module.use_compiled_network(False)
        decision = self.decisions.get(stage)
        # A resumed run finds the decision in the checkpoint and compiles from the same batch on.
        if decision is not None and decision["compile"] and (
                (trainer.current_epoch, batch_idx) >= (decision["epoch"], decision["batch"])):
            pl_module.use_compiled_network(True)
        synchronize(pl_module.device)
        self._started = time.perf_counter()

    @override
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._active(pl_module):
            return
        synchronize(pl_module.device)
        elapsed = time.perf_counter() - self._started
        self._steps_in_stage += 1
        if self._stage not in self.decisions:
            if self._steps_in_stage > self.skipped_steps:
                self._eager_s.append(elapsed)
            if len(self._eager_s) == self.timed_steps:
                self._decide(trainer, pl_module, batch, batch_idx)
        elif self._eager_s and self.decisions[self._stage]["compile"]:
            self._measure_compiled(trainer, pl_module, elapsed)

    def _remaining_steps(self, trainer: L.Trainer, pl_module: L.LightningModule, batch_idx: int) -> int:
        schedule = pl_module.schedule
        stage = schedule.stages[self._stage]
        per_epoch = trainer.num_training_batches
        done = (trainer.current_epoch - schedule.first_epoch_of(self._stage)) * per_epoch + batch_idx + 1
        return stage.epochs * per_epoch - done

    def _decide(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        eager_step_s = statistics.median(self._eager_s)
        remaining = self._remaining_steps(trainer, pl_module, batch_idx)
        images = batch[0]
        self._key = network_shape_key(pl_module.net, images, pl_module.device,
                                      f"{trainer.precision} {pl_module.memory_format}")
        record = find_record(compile_cache_dir(), self._key)
        if record is None:
            warmup_s, speedup, source = UNRECORDED_WARMUP_S, UNRECORDED_SPEEDUP, "assumed (no record for this network)"
        else:
            warmup_s, speedup = record.expected_warmup_s, record.speedup
            source = f"from {record.compiles} compile(s) before on this machine"
        if pl_module.hparams.get("compile") is True:
            decided, source = remaining > 0, source + ", model.compile=true"
        else:
            decided = compile_pays(remaining, eager_step_s, warmup_s, speedup)
        decided = bool(trainer.strategy.broadcast(decided, src=0))
        self.decisions[self._stage] = {"compile": decided, "epoch": trainer.current_epoch, "batch": batch_idx + 1}
        saving = remaining * eager_step_s * (1.0 - 1.0 / speedup) if speedup > 0 else 0.0
        setting = str(pl_module.hparams.get("compile")).lower()
        log.info("model.compile=%s, stage %d: eager step %.3f s, %d steps left; warm-up %.1f s and speed-up %.2fx "
                 "%s: %s (would save %.0f s)", setting, self._stage + 1, eager_step_s, remaining, warmup_s, speedup,
                 source, "compiling" if decided else "staying eager", saving)

    def _measure_compiled(self, trainer: L.Trainer, pl_module: L.LightningModule, elapsed: float) -> None:
        eager_step_s = statistics.median(self._eager_s)
        if self._warmup_s is None:
            self._warmup_s = max(0.0, elapsed - eager_step_s)
            return
        if len(self._compiled_s) >= self.timed_steps:
            return
        self._compiled_s.append(elapsed)
        if len(self._compiled_s) == self.timed_steps:
            record = CompileRecord(self._warmup_s, eager_step_s, statistics.median(self._compiled_s))
            log.info("model.compile, stage %d: warm-up %.1f s, compiled step %.3f s (%.2fx the eager step)",
                     self._stage + 1, record.warmup_s, record.compiled_step_s, record.speedup)
            if trainer.is_global_zero:
                write_record(compile_cache_dir(), self._key, record, type(pl_module.net).__name__)
