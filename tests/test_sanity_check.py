"""The sanity check before training runs the validation code on a few images, not on two whole batches."""

from __future__ import annotations

import lightning as L
import pytest
from omegaconf import open_dict

from src.models.classifier_module import sanity_check_problems
from src.runs.training import train


SEEN: dict[str, list[int]] = {"sanity": [], "validation": []}


class ForwardSizes(L.Callback):
    """Records in SEEN the batch sizes the network's forward saw during the sanity check and the validations."""

    def on_validation_epoch_start(self, trainer, pl_module):
        phase = "sanity" if trainer.sanity_checking else "validation"
        self.hook = pl_module.net.register_forward_hook(lambda module, inputs, output: SEEN[phase].append(len(inputs[0])))

    def on_validation_epoch_end(self, trainer, pl_module):
        self.hook.remove()


@pytest.mark.parametrize("images, expected", [(2, [2]), (None, [6])])
def test_the_sanity_check_forwards_sanity_check_images_of_each_batch(tiny_cfg, images, expected):
    SEEN["sanity"].clear(), SEEN["validation"].clear()
    with open_dict(tiny_cfg):
        tiny_cfg.callbacks.forward_sizes = {"_target_": "tests.test_sanity_check.ForwardSizes"}
        tiny_cfg.model.sanity_check_images = images
        del tiny_cfg.callbacks.interpretation, tiny_cfg.callbacks.show_batch
        tiny_cfg.schedule.stages = tiny_cfg.schedule.stages[:1]
    assert tiny_cfg.trainer.get("num_sanity_val_steps") is None  # Lightning's two batches
    metrics = train(tiny_cfg)
    # 30 images, 6 held out: one validation batch of 6 (batch size 8)
    assert SEEN["sanity"] == expected
    assert SEEN["validation"] == [6]  # the epoch's validation sees every image, whatever the sanity check did
    assert any(metrics["val/error_rate"] == pytest.approx(k / 6) for k in range(7))


def test_sanity_check_images_must_be_a_positive_whole_number_or_null():
    assert sanity_check_problems(2) == [] and sanity_check_problems(None) == []
    for bad in (0, -1, 1.5, "2", True):
        (problem,) = sanity_check_problems(bad)
        assert problem.key == "model.sanity_check_images" and problem.value == bad
