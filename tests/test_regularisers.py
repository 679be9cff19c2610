"""MixUp/CutMix batch statistics, label smoothing of the training loss, and EMA of the weights (issue 15 item 4)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import open_dict
from scipy import stats

from src.runs.config_checks import check_train_config
from src.core.problems import ConfigError
from src.models.batch_mixing import BatchMixing
from src.evaluate import evaluate
from src.runs.builder import build_module
from tests.conftest import TINY_OVERRIDES, compose_config, train_tiny_run

CLASSES = 5


def numbered_batch(size: int = CLASSES) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is filled with the value i and has label i: a mixed image's values tell where they came from."""
    images = torch.arange(size, dtype=torch.float32).view(size, 1, 1, 1).expand(size, 3, 16, 16).clone()
    return images, torch.arange(size)


def test_mixup_soft_labels_sum_to_one_and_lambda_follows_beta():
    torch.manual_seed(0)
    mixing = BatchMixing(CLASSES, mixup_alpha=0.4)
    images, labels = numbered_batch()
    lams = []
    for _ in range(2000):
        mixed, targets = mixing(images, labels)
        assert targets.shape == (CLASSES, CLASSES)
        torch.testing.assert_close(targets.sum(1), torch.ones(CLASSES))
        lam = float(targets[0, 0])  # image 0 is mixed with its neighbour, image 4 (torchvision rolls by one)
        torch.testing.assert_close(targets[0, CLASSES - 1], torch.tensor(1 - lam))
        # the images are mixed with the labels' lambda: lam * 0 + (1 - lam) * 4
        torch.testing.assert_close(mixed[0], torch.full((3, 16, 16), (1 - lam) * (CLASSES - 1)))
        lams.append(lam)
    # Kolmogorov-Smirnov against Beta(0.4, 0.4): the seeded draws pass at 1%, a Beta(1, 1) would not.
    assert stats.kstest(lams, stats.beta(0.4, 0.4).cdf).pvalue > 0.01
    assert stats.kstest(lams, stats.beta(1.0, 1.0).cdf).pvalue < 1e-6


def test_cutmix_pastes_a_box_and_its_area_is_the_label_weight():
    torch.manual_seed(1)
    mixing = BatchMixing(CLASSES, cutmix_alpha=1.0)
    images, labels = numbered_batch()
    lams = []
    for _ in range(1000):
        mixed, targets = mixing(images, labels)
        torch.testing.assert_close(targets.sum(1), torch.ones(CLASSES))
        pasted = (mixed[1] == 0).float().mean()  # image 1 receives image 0's pixels inside the box
        assert set(mixed[1].unique().tolist()) <= {0.0, 1.0}  # pasted, not blended
        torch.testing.assert_close(targets[1, 1], 1 - pasted)
        lams.append(float(targets[1, 1]))
    # the box is clipped at the border, so the kept area is Beta(1, 1) shifted up: mean above 0.5
    assert 0.5 < np.mean(lams) < 0.75


def test_switch_prob_and_prob_choose_cutmix_mixup_or_nothing_per_batch():
    torch.manual_seed(2)
    mixing = BatchMixing(CLASSES, mixup_alpha=0.4, cutmix_alpha=1.0, switch_prob=0.25, prob=0.8)
    images, labels = numbered_batch()
    kinds = {"none": 0, "cutmix": 0, "mixup": 0}
    for _ in range(2000):
        mixed, targets = mixing(images, labels)
        torch.testing.assert_close(targets.sum(1), torch.ones(CLASSES))
        if torch.equal(mixed, images):
            assert torch.equal(targets, F.one_hot(labels, CLASSES).float())
            kinds["none"] += 1
        elif set(mixed[1].unique().tolist()) <= {0.0, 1.0}:
            kinds["cutmix"] += 1
        else:
            kinds["mixup"] += 1
    # expected shares 0.2, 0.8 * 0.25, 0.8 * 0.75 (a CutMix box can be empty, so "none" may hold a few more)
    assert kinds["none"] / 2000 == pytest.approx(0.2, abs=0.03)
    assert kinds["cutmix"] / 2000 == pytest.approx(0.2, abs=0.03)
    assert kinds["mixup"] / 2000 == pytest.approx(0.6, abs=0.03)


def test_multi_label_targets_are_mixed_multi_hot_vectors():
    torch.manual_seed(3)
    mixing = BatchMixing(CLASSES, mixup_alpha=0.4)
    images, _ = numbered_batch()
    multi_hot = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 0, 1]],
                             dtype=torch.float32)
    mixed, targets = mixing(images, multi_hot)
    lam = 1 - float(mixed[0, 0, 0, 0]) / (CLASSES - 1)
    torch.testing.assert_close(targets, lam * multi_hot + (1 - lam) * multi_hot.roll(1, 0))


def module_of(overrides: list[str], multi_label: bool = False):
    cfg = compose_config([*TINY_OVERRIDES, *overrides])
    return build_module(cfg, classes=[f"c{i}" for i in range(CLASSES)], multi_label=multi_label, pretrained=False)


def test_label_smoothing_is_torchs_and_applies_to_training_only():
    module = module_of(["model.label_smoothing=0.1"])
    torch.manual_seed(0)
    logits, labels = torch.randn(8, CLASSES), torch.randint(0, CLASSES, (8,))
    smoothed = module.train_criterion(logits, labels)
    torch.testing.assert_close(smoothed, F.cross_entropy(logits, labels, label_smoothing=0.1))
    # by hand: 0.9 on the label, 0.1 spread over all classes
    soft = 0.9 * F.one_hot(labels, CLASSES) + 0.1 / CLASSES
    torch.testing.assert_close(smoothed, -(soft * logits.log_softmax(1)).sum(1).mean())
    assert smoothed != pytest.approx(float(F.cross_entropy(logits, labels)), abs=1e-3)
    torch.testing.assert_close(module.criterion(logits, labels), F.cross_entropy(logits, labels))  # validation


def test_multi_label_smoothing_moves_each_cell_towards_one_half():
    module = module_of(["model.label_smoothing=0.2"], multi_label=True)
    torch.manual_seed(0)
    logits, targets = torch.randn(4, CLASSES), (torch.rand(4, CLASSES) > 0.5).float()
    expected = F.binary_cross_entropy_with_logits(logits, targets * 0.8 + 0.1)  # 1 -> 0.9, 0 -> 0.1
    torch.testing.assert_close(module.train_criterion(logits, targets), expected)


def test_bad_regulariser_settings_are_named_at_once():
    bad = ["model.label_smoothing=1.0", "model.mixup.mixup_alpha=-1", "model.mixup.switch_prob=2"]
    with pytest.raises(ConfigError) as error:
        check_train_config(compose_config([*TINY_OVERRIDES, *bad]))  # before any data is read
    text = str(error.value)
    assert "3 problem(s)" in text
    for key in ("model.label_smoothing=1.0", "model.mixup.mixup_alpha=-1", "model.mixup.switch_prob=2"):
        assert key in text


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
@pytest.mark.filterwarnings("ignore:You are trying to `self.log\(\)`")
def test_training_step_hands_the_mixed_images_and_their_soft_targets_to_the_criterion(kind):
    module = module_of([f"model.mixup.{kind}_alpha={0.4 if kind == 'mixup' else 1.0}"]).eval()  # no dropout
    seen = {}
    module.net.register_forward_pre_hook(lambda net, args: seen.update(images=args[0].clone()))
    module.train_criterion.register_forward_pre_hook(lambda loss, args: seen.update(targets=args[1].clone()))
    images, labels = numbered_batch()
    torch.manual_seed(4)
    loss = module.training_step((images, labels), 0)
    mixed, targets = seen["images"], seen["targets"]
    assert targets.shape == (CLASSES, CLASSES) and targets.dtype == torch.float32
    torch.testing.assert_close(targets.sum(1), torch.ones(CLASSES))
    if kind == "mixup":  # image 0 (zeros) blended with image 4 (fours) with the labels' lambda
        lam = float(targets[0, 0])
        assert 0.0 < lam < 1.0
        torch.testing.assert_close(targets[0, CLASSES - 1], torch.tensor(1 - lam))
        torch.testing.assert_close(mixed[0], torch.full((3, 16, 16), (1 - lam) * (CLASSES - 1)))
    else:  # image 1 (ones) with a box of image 0's zeros pasted in: the box's area is the label weight
        assert set(mixed[1].unique().tolist()) == {0.0, 1.0}
        torch.testing.assert_close(targets[1, 1], 1 - (mixed[1] == 0).float().mean())
    # the step's loss is the criterion of the network's logits on those images against those targets
    torch.testing.assert_close(loss, F.cross_entropy(module(mixed), targets))


@pytest.fixture
def training_targets(monkeypatch) -> list[torch.Tensor]:
    """The targets every training loss of a run was computed against (spied on the criterion training_step calls)."""
    from src.models import classifier_module

    seen, build = [], classifier_module.training_loss

    def spied(**kwargs):
        criterion = build(**kwargs)
        criterion.register_forward_pre_hook(lambda loss, args: seen.append(args[1].detach().clone()))
        return criterion

    monkeypatch.setattr(classifier_module, "training_loss", spied)
    return seen


def _soft_rows(targets: list[torch.Tensor]) -> int:
    """The rows of the targets that are no 0/1 vector: mixed labels."""
    return sum(int(((t > 0) & (t < 1)).any(1).sum()) for t in targets)


def test_mixup_and_label_smoothing_train_for_real(tmp_path, training_targets):
    run = train_tiny_run(tmp_path, ["model.label_smoothing=0.1", "model.mixup.mixup_alpha=0.4",
                                    "model.mixup.cutmix_alpha=1.0"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert np.isfinite(metrics["final"]["val/loss"])
    # every training batch of the 2 epochs x 3 batches reached the criterion as soft targets, mixed ones among them
    assert len(training_targets) == 6 and all(t.ndim == 2 and t.shape[1] == 3 for t in training_targets)
    assert _soft_rows(training_targets) > 0
    logged = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert logged["label_smoothing"] == 0.1 and logged["mixup"]["cutmix_alpha"] == 1.0


@pytest.mark.precision  # evaluate reruns the validation at the trained precision, which `auto` chose
def test_ema_weights_are_validated_and_saved(tmp_path):
    run = train_tiny_run(tmp_path, ["callbacks=[default,ema]", "callbacks.ema.decay=0.9"])
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    ema, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert checkpoint["averaging_state"]["n_averaged"] == 6  # one update per optimizer step: 2 epochs x 3 batches
    differing = [k for k in ema if k.startswith("net.") and ema[k].is_floating_point() and not torch.equal(ema[k], raw[k])]
    assert any(k.startswith("net.head") for k in differing)  # the head trained in both stages

    def evaluated(ckpt: Path) -> dict:
        cfg = compose_config([f"ckpt_path={ckpt}"], config_name="evaluate")
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / ckpt.stem)
        return evaluate(cfg)

    logged = json.loads((run / "metrics.json").read_text())["final"]
    assert evaluated(last)["loss"] == pytest.approx(logged["val/loss"], abs=1e-4)  # evaluate loads the EMA weights
    # the raw weights give another loss: the logged validation was the EMA model's
    raw_ckpt = tmp_path / "raw" / "checkpoints" / "raw.ckpt"
    raw_ckpt.parent.mkdir(parents=True)
    shutil.copy(run / "split.csv", raw_ckpt.parent.parent / "split.csv")
    torch.save({**checkpoint, "state_dict": raw}, raw_ckpt)
    assert abs(evaluated(raw_ckpt)["loss"] - logged["val/loss"]) > 1e-3


def test_multi_label_mixup_and_smoothing_train_for_real(tmp_path, training_targets):
    from src.runs.training import train
    from tests.test_labels import flat_images, run_cfg, write_rows

    root = tmp_path / "planet"
    images = flat_images(root, classes=3, per_class=8)
    rows = [[name, f"{label} even" if i % 2 == 0 else label] for i, (name, label) in enumerate(images)]
    write_rows(root / "tags.csv", ["image_name", "tags"], rows)
    metrics = train(run_cfg(tmp_path / "run", root, [
        "data/labels=csv", "data.labels.csv_path=tags.csv", "data.labels.path_column=image_name",
        "data.labels.label_column=tags", "data.labels.label_delim=' '", "data.valid_pct=0.25",
        "model.label_smoothing=0.1", "model.mixup.mixup_alpha=0.4", "model.mixup.cutmix_alpha=1.0"]))
    assert np.isfinite(metrics["val/loss"]) and 0.0 <= metrics["val/fbeta"] <= 1.0
    assert training_targets and all(t.ndim == 2 and t.shape[1] == 4 for t in training_targets)  # 3 classes + "even"
    assert _soft_rows(training_targets) > 0  # mixed multi-hot vectors reached the criterion
    hparams = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert hparams["multi_label"] is True and hparams["label_smoothing"] == 0.1
