"""Imbalanced folders: the balanced sampler, balanced class weights, macro-F1 in evaluate (issue 15 item 5)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from scipy import stats

from src.data.loading.balanced_sampler import BalancedSampler
from src.inference.interpretation import Interpretation
from src.models.losses import balanced_class_weights
from src.runs.builder import build_run
from tests.conftest import SAMPLE, TINY_OVERRIDES, compose_config, train_tiny_run

COUNTS = {"ankle_boot": 24, "bag": 6, "coat": 3}  # training images per class in the imbalanced folder


def imbalanced_folder(dest: Path) -> Path:
    """train/ with 24, 6 and 3 real images of three classes; valid/ with 4 of each."""
    for name, count in COUNTS.items():
        images = sorted((SAMPLE / name).iterdir())
        for subset, chosen in (("train", images[:count]), ("valid", images[100:104])):
            (dest / subset / name).mkdir(parents=True)
            for image in chosen:
                shutil.copy(image, dest / subset / name / image.name)
    return dest


def test_balanced_sampler_draws_every_class_equally_often():
    labels = [0] * 200 + [1] * 20 + [2] * 4
    sampler = BalancedSampler(labels, seed=7)
    assert len(sampler) == len(labels)  # an epoch is as long as the training set
    drawn = []
    for epoch in range(40):
        sampler.set_epoch(epoch)
        drawn += [labels[i] for _, i in sampler]  # (epoch, index) pairs: src/data/loading/samplers.py
    counts = Counter(drawn)
    # chi-square against equal class frequencies (2 degrees of freedom); the random order would give 200:20:4
    assert stats.chisquare([counts[c] for c in range(3)]).pvalue > 0.01
    # and the images inside a class equally often: the 4 images of class 2 each ~1/12 of all draws
    per_image = Counter(i for _, i in sampler if i >= 220)
    assert stats.chisquare(list(per_image.values())).pvalue > 0.01


def test_balanced_sampler_epoch_is_a_pure_function_of_seed_and_epoch():
    labels = [0] * 50 + [1] * 5
    first, again = BalancedSampler(labels, seed=3), BalancedSampler(labels, seed=3)
    first.set_epoch(0)
    epoch0 = list(first)
    first.set_epoch(1)
    epoch1 = list(first)
    again.set_epoch(1)  # a resumed run starts at epoch 1 without drawing epoch 0
    assert list(again) == epoch1 != epoch0
    assert list(again) == epoch1  # iterating twice gives the same epoch
    other_seed = BalancedSampler(labels, seed=4)
    other_seed.set_epoch(1)
    assert list(other_seed) != epoch1


def test_balanced_class_weights_are_inverse_frequencies():
    weights = balanced_class_weights([24, 6, 3])
    assert weights == pytest.approx([33 / (3 * 24), 33 / (3 * 6), 33 / (3 * 3)])
    counts = torch.tensor([24.0, 6.0, 3.0])
    assert (torch.tensor(weights) * counts).tolist() == pytest.approx([11.0] * 3)  # each class weighs the same
    with pytest.raises(ValueError, match="no training images"):
        balanced_class_weights([5, 0])


def test_datamodule_counts_classes_and_the_module_takes_the_weights(tmp_path):
    root = imbalanced_folder(tmp_path / "images")
    cfg = compose_config([*TINY_OVERRIDES, f"data.root={root}", "model.class_weights=balanced", "data.sampler=balanced",
                          f"paths.output_dir={tmp_path / 'run'}"])
    run = build_run(cfg)
    assert run.datamodule.class_counts == list(COUNTS.values())
    expected = balanced_class_weights(list(COUNTS.values()))
    assert OmegaConf.to_container(cfg.model.class_weights) == pytest.approx(expected)  # as config.yaml records it
    assert run.module.train_criterion.weight.tolist() == pytest.approx(expected)
    assert run.module.criterion.weight is None  # validation's loss stays plain
    run.datamodule.setup("fit")
    loader = run.datamodule.train_dataloader()
    assert isinstance(loader.sampler, BalancedSampler) and len(loader.sampler) == sum(COUNTS.values())


def test_class_weights_and_sampler_are_refused_for_multi_label(tmp_path):
    from src.core.problems import ConfigError
    from src.data.datamodule import ImageFolderDataModule
    from src.data.labels.sources import RegexLabels

    multi_label = RegexLabels(pattern=r"(\w+)_\d+\.png", label_delim=" ")
    problems = ImageFolderDataModule.problems(None, multi_label, 0.2, 8, 32, "skip", "balanced")
    assert [p.key for p in problems] == ["data.sampler"]
    from src.models.classifier_module import ImageClassifierModule
    problems = ImageClassifierModule.problems(0.0, None, "balanced", 3, multi_label=True)
    assert [p.key for p in problems] == ["model.class_weights"]
    with pytest.raises(ConfigError, match="data.sampler='often'"):
        ImageFolderDataModule(tmp_path, sampler="often", mean=[0.5] * 3, std=[0.5] * 3)


def test_balanced_sampler_and_class_weights_train_for_real(tmp_path):
    root = imbalanced_folder(tmp_path / "imbalanced")
    run = train_tiny_run(tmp_path, [f"data.root={root}", "data.sampler=balanced", "model.class_weights=balanced",
                                    "data.batch_size=6"], classes=1, per_class=1)
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.data.sampler == "balanced"
    assert list(saved.model.class_weights) == pytest.approx(balanced_class_weights(list(COUNTS.values())))
    weights = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]["train_criterion.weight"]
    assert weights.tolist() == pytest.approx(list(saved.model.class_weights))


def test_evaluate_reports_macro_f1_and_macro_recall():
    # 3 classes: class 0 always right (4 images), class 1 half right (2), class 2 never (2 images)
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    predicted = torch.tensor([0, 0, 0, 0, 1, 0, 0, 0])
    metrics = Interpretation(["a", "b", "c"], torch.nn.functional.one_hot(predicted, 3).float().add(1e-3).log(),
                             targets).metrics()
    f1 = {c: metrics["per_class"][c]["f1"] for c in "abc"}
    assert f1 == pytest.approx({"a": 2 * 4 / 7 / (4 / 7 + 1), "b": 2 * 0.5 / 1.5, "c": 0.0})
    assert metrics["macro_f1"] == pytest.approx(sum(f1.values()) / 3)
    assert metrics["macro_recall"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert metrics["error_rate"] == pytest.approx(3 / 8)


def test_macro_averages_leave_out_a_class_without_images_even_when_it_is_predicted():
    # No image of c, but one image of a predicted as c: torchmetrics' macro average counted c in with recall 0
    targets = torch.tensor([0, 0, 1, 1])
    predicted = torch.tensor([0, 2, 1, 1])
    metrics = Interpretation(["a", "b", "c"], torch.nn.functional.one_hot(predicted, 3).float().add(1e-3).log(),
                             targets).metrics()
    assert metrics["macro_recall"] == pytest.approx((0.5 + 1) / 2)  # scikit-learn's recall_score(labels=[a, b])
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert metrics["classes_without_images"] == ["c"]
    assert metrics["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_multi_label_macro_f1_leaves_out_a_label_no_image_carries():
    from src.inference.interpretation import MultiLabelInterpretation

    targets = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0]])  # no image carries label c
    logits = torch.tensor([[5.0, -5.0, 5.0], [5.0, -5.0, -5.0], [-5.0, 5.0, -5.0]])  # c predicted once
    metrics = MultiLabelInterpretation(["a", "b", "c"], logits, targets, threshold=0.5).metrics()
    assert metrics["macro_f1"] == pytest.approx((1 + 2 / 3) / 2)  # a: 1, b: precision 1, recall 1/2
    assert metrics["classes_without_images"] == ["c"]
