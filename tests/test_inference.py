"""Using a trained model: evaluate, predict (with TTA), export, on a real tiny checkpoint."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, open_dict

from src.evaluate import evaluate
from src.inference.interpretation import Interpretation
from tests.conftest import compose_config, copy_sample, require_extra, train_tiny_run

# What `auto` resolves to changes these results: `make test-other-cpu` runs them as the other kind of CPU.
pytestmark = pytest.mark.precision

CLASSES = 6  # more than 5, so top-5 accuracy is reported


@pytest.fixture(scope="module")
def trained(module_tmp_path) -> Path:
    """One tiny training run on real images, shared by the module: its run directory."""
    return train_tiny_run(module_tmp_path / "trained", [], classes=CLASSES)


def task_cfg(name: str, output_dir: Path, overrides: list[str]) -> DictConfig:
    cfg = compose_config(overrides, config_name=name)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_evaluate_reproduces_the_metrics_training_logged(trained, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"  # the weights of the final validation
    metrics = evaluate(task_cfg("evaluate", tmp_path, [f"ckpt_path={ckpt}",
                                                       "data.num_workers=0"]))
    logged = json.loads((trained / "metrics.json").read_text())["final"]
    assert metrics["error_rate"] == pytest.approx(logged["val/error_rate"], abs=1e-4)
    assert metrics["accuracy"] == pytest.approx(logged["val/accuracy"], abs=1e-4)
    assert metrics["loss"] == pytest.approx(logged["val/loss"], abs=1e-4)

    valid_rows = [r for r in read_rows(trained / "split.csv") if r["subset"] == "valid"]
    predictions = read_rows(tmp_path / "predictions.csv")
    assert metrics["images"] == len(predictions) == len(valid_rows) == 2 * CLASSES
    assert [r["path"] for r in predictions] == [r["path"] for r in valid_rows]
    errors = sum(r["label"] != r["prediction"] for r in predictions)
    assert errors / len(predictions) == pytest.approx(metrics["error_rate"])
    mean_loss = sum(float(r["loss"]) for r in predictions) / len(predictions)
    assert mean_loss == pytest.approx(metrics["loss"], abs=1e-4)

    written = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= written["top5_accuracy"] <= 1.0 and written["top5_accuracy"] >= written["accuracy"]
    assert set(written["per_class"]) == set(json.loads((trained / "metrics.json").read_text())["classes"])
    assert {"precision", "recall", "f1", "support"} == set(written["per_class"]["bag"])
    assert sum(c["support"] for c in written["per_class"].values()) == len(predictions)
    for name in ["confusion_matrix.png", "confusion_matrix.csv", "top_losses.png", "most_confused.txt"]:
        assert (tmp_path / name).is_file(), name
    [header, *matrix] = list(csv.reader((tmp_path / "confusion_matrix.csv").open()))
    classes = header[1:]
    assert [row[0] for row in matrix] == classes and len(classes) == CLASSES
    for row in predictions:
        matrix[classes.index(row["label"])][1 + classes.index(row["prediction"])] = str(
            int(matrix[classes.index(row["label"])][1 + classes.index(row["prediction"])]) - 1)
    assert all(cell == "0" for row in matrix for cell in row[1:])  # every prediction counted once
    confused = (tmp_path / "most_confused.txt").read_text().splitlines()
    assert sum(int(line.split("\t")[2]) for line in confused) == errors


def test_evaluate_best_checkpoint_gives_the_best_error_rate(trained, tmp_path):
    metrics = evaluate(task_cfg("evaluate", tmp_path, [f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}",
                                                       "data.num_workers=0", "normalize_confusion_matrix=true"]))
    best = json.loads((trained / "metrics.json").read_text())["best"]["val/error_rate"]
    assert metrics["error_rate"] == pytest.approx(best, abs=1e-4)


def test_evaluate_a_folder_reports_labels_the_model_does_not_know(trained, tmp_path):
    folder = copy_sample(tmp_path / "images", classes=2, per_class=3)
    (folder / "hat").mkdir()
    for image in sorted((folder / "bag").iterdir())[:2]:
        (folder / "hat" / image.name).write_bytes(image.read_bytes())
    metrics = evaluate(task_cfg("evaluate", tmp_path / "eval", [
        f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}", f"data.root={folder}", "data.num_workers=0",
    ]))
    assert metrics["unknown_labels"] == {"hat": 2}
    assert metrics["images"] == 6
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["unknown_labels"] == {"hat": 2} and written["data"] == str(folder)
    assert len(read_rows(tmp_path / "eval" / "predictions.csv")) == 6


def test_evaluate_a_folder_without_one_of_the_classes_averages_the_classes_it_has(trained, tmp_path, caplog):
    ckpt = trained / "checkpoints" / "best.ckpt"
    everything = copy_sample(tmp_path / "all", classes=CLASSES, per_class=4)
    evaluate(task_cfg("evaluate", tmp_path / "eval_all", [f"ckpt_path={ckpt}", f"data.root={everything}",
                                                          "data.num_workers=0"]))
    every_class = json.loads((tmp_path / "eval_all" / "metrics.json").read_text())
    # Left out: a class the model predicts for images of other classes (its column is not empty), with
    # another class's images found (else every recall left is 0, and so is any average of them).
    recall = {c: values["recall"] for c, values in every_class["per_class"].items()}
    missing = next((predicted for _, predicted, _ in every_class["most_confused"]
                    if any(r > 0 for c, r in recall.items() if c != predicted)), None)
    assert missing is not None, every_class
    folder = copy_sample(tmp_path / "images", classes=CLASSES, per_class=4)
    shutil.rmtree(folder / missing)

    with caplog.at_level(logging.WARNING, logger="src.evaluate"):
        metrics = evaluate(task_cfg("evaluate", tmp_path / "eval", [f"ckpt_path={ckpt}", f"data.root={folder}",
                                                                    "data.num_workers=0"]))
    # Four images of each present class: balanced accuracy (macro recall) is the accuracy.
    assert metrics["macro_recall"] == pytest.approx(metrics["accuracy"], abs=1e-6)
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["classes_without_images"] == [missing]
    assert written["per_class"][missing]["support"] == 0
    present = [c for c in written["per_class"] if c != missing]
    assert written["macro_f1"] == pytest.approx(sum(written["per_class"][c]["f1"] for c in present) / len(present))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(missing in message and "macro" in message for message in warnings), warnings


def test_evaluate_outside_a_run_directory_names_the_fix(trained, tmp_path):
    ckpt = tmp_path / "elsewhere.ckpt"
    ckpt.write_bytes((trained / "checkpoints" / "best.ckpt").read_bytes())
    with pytest.raises(FileNotFoundError, match="data.root=DIR"):
        evaluate(task_cfg("evaluate", tmp_path / "eval", [f"ckpt_path={ckpt}"]))


def test_interpretation_numbers():
    classes = ["a", "b", "c"]
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.5, 0.1, 0.4], [0.2, 0.2, 0.6]])
    targets = torch.tensor([0, 1, 1, 2, 2])
    interp = Interpretation(classes, probs.log(), targets)
    metrics = interp.metrics()
    assert metrics["error_rate"] == pytest.approx(2 / 5) and metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["loss"] == pytest.approx(-sum(math.log(p) for p in [0.7, 0.8, 0.3, 0.4, 0.6]) / 5, rel=1e-5)
    assert "top5_accuracy" not in metrics  # three classes: top-5 says nothing
    assert metrics["per_class"]["a"]["precision"] == pytest.approx(1 / 3)  # a predicted thrice, right once
    assert metrics["per_class"]["b"]["recall"] == pytest.approx(1 / 2)
    assert interp.confusion_matrix().tolist() == [[1, 0, 0], [1, 1, 0], [1, 0, 1]]
    assert interp.most_confused() == [("b", "a", 1), ("c", "a", 1)]
    assert interp.top_losses(2) == [2, 3]


def test_top_losses_name_the_prediction_the_actual_class_and_its_probability():
    from src.visualize.interpretation_figures import TOP_LOSS_TITLE_KEY, top_losses_figure

    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.5, 0.1, 0.4], [0.2, 0.2, 0.6]])
    interp = Interpretation(["a", "b", "c"], probs.log(), torch.tensor([0, 1, 1, 2, 2]))
    images = [(torch.rand(3, 8, 8), 0) for _ in range(5)]
    figure = top_losses_figure(interp, images, 2, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    # sample 2: predicted a at 0.6, actually b at 0.3; sample 3: predicted a at 0.5, actually c at 0.4
    assert titles == ["pred a / actual b\nloss 1.20, p(actual) 0.30", "pred a / actual c\nloss 0.92, p(actual) 0.40"]
    assert figure.get_suptitle() == TOP_LOSS_TITLE_KEY


def _drawn_matrix(figure) -> torch.Tensor:
    """The values a confusion-matrix figure shows, as the (actual, predicted) grid it colours."""
    return torch.from_numpy(np.asarray(figure.axes[0].images[0].get_array(), dtype=np.float64))


def _cell_texts(figure) -> dict[tuple[int, int], str]:
    return {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in figure.axes[0].texts}


def test_normalised_confusion_matrix_shows_the_fraction_of_each_actual_class():
    import matplotlib.pyplot as plt

    from src.visualize.interpretation_figures import confusion_matrix_figure

    counts = torch.tensor([[3, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 1, 2]])  # class c: no images
    normalised = confusion_matrix_figure(counts, ["a", "b", "c", "d"], normalize=True)
    expected = [[0.75, 0.25, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 0, 0], [0.25, 0, 0.25, 0.5]]
    assert torch.allclose(_drawn_matrix(normalised), torch.tensor(expected, dtype=torch.float64))
    texts = _cell_texts(normalised)
    assert (texts[(0, 0)], texts[(0, 1)], texts[(3, 3)], texts[(2, 2)]) == ("0.75", "0.25", "0.50", "0.00")
    plain = confusion_matrix_figure(counts, ["a", "b", "c", "d"])
    assert torch.equal(_drawn_matrix(plain), counts.double()) and _cell_texts(plain)[(0, 0)] == "3"
    plt.close(normalised)
    plt.close(plain)


def test_a_confusion_matrix_of_many_classes_draws_its_most_confused_part_and_keeps_the_whole_as_csv(tmp_path, caplog):
    import matplotlib.pyplot as plt
    from omegaconf import OmegaConf
    from PIL import Image

    from src.evaluate import write_single_label_pictures
    from src.visualize.interpretation_figures import MAX_DRAWN_CLASSES, confusion_matrix_figure

    classes = [f"class {i:03d}" for i in range(200)]
    targets = torch.arange(200).repeat(2)
    predictions = targets.clone()
    predictions[:40] = (targets[:40] + 1) % 40  # classes 0..39 confused with their neighbours
    predictions[200:210] = (targets[200:210] + 1) % 10  # classes 0..9 twice as often
    log_probs = torch.full((400, 200), -20.0)
    log_probs[torch.arange(400), predictions] = 0.0
    interpretation = Interpretation(classes, log_probs, targets)
    dataset = [(torch.zeros(3, 8, 8),)] * 400
    with caplog.at_level("INFO"):
        most_confused = write_single_label_pictures(
            OmegaConf.create({"normalize_confusion_matrix": False, "top_losses": 4}), tmp_path, interpretation,
            dataset, OmegaConf.create({"mean": [0.5] * 3, "std": [0.5] * 3}))
    assert most_confused[0] == ("class 000", "class 001", 2)
    assert f"drawing the confusion matrix's part between the {MAX_DRAWN_CLASSES} of 200 classes" in caplog.text
    width, height = Image.open(tmp_path / "confusion_matrix.png").size
    assert width <= 2000 and height <= 2000  # 12200 pixels square if all 200 were drawn
    [header, *rows] = list(csv.reader((tmp_path / "confusion_matrix.csv").open()))
    assert header == ["actual/predicted", *classes] and [row[0] for row in rows] == classes
    assert torch.equal(torch.tensor([[int(v) for v in row[1:]] for row in rows]), interpretation.confusion_matrix())

    figure = confusion_matrix_figure(interpretation.confusion_matrix(), classes)
    assert f"part: the {MAX_DRAWN_CLASSES} of 200 classes in the most confusions" in figure.axes[0].get_title()
    shown = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert shown[:10] == classes[:10] and set(shown) <= set(classes[:40])  # the classes in the most confusions
    plt.close(figure)


def test_evaluate_draws_the_normalised_confusion_matrix_when_asked(trained, tmp_path, monkeypatch):
    import src.evaluate

    drawn = []
    draw = src.evaluate.confusion_matrix_figure

    def keep_the_figure(*args, **kwargs):
        drawn.append(draw(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(src.evaluate, "confusion_matrix_figure", keep_the_figure)
    evaluate(task_cfg("evaluate", tmp_path, [f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}",
                                             "data.num_workers=0", "normalize_confusion_matrix=true"]))
    classes = json.loads((trained / "metrics.json").read_text())["classes"]
    counts = torch.zeros(CLASSES, CLASSES, dtype=torch.float64)
    for row in read_rows(tmp_path / "predictions.csv"):
        counts[classes.index(row["label"]), classes.index(row["prediction"])] += 1
    [figure] = drawn
    shown = _drawn_matrix(figure)
    assert torch.allclose(shown.sum(dim=1), torch.ones(CLASSES, dtype=torch.float64))  # every class has images
    assert torch.allclose(shown, counts / counts.sum(dim=1, keepdim=True))


def test_training_logs_the_interpretation_figures_to_tensorboard(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained / "tensorboard")).Reload()
    assert {"val/confusion_matrix", "val/top_losses"} <= set(events.Tags()["images"])


def test_python_api_predicts_like_fastai(trained):
    from PIL import Image

    from src import Predictor

    predictor = Predictor.from_checkpoint(trained / "checkpoints" / "best.ckpt", device="cpu")
    image_path = sorted((trained.parent / "images" / "coat").iterdir())[0]
    label, index, probs = predictor.predict(image_path)
    assert predictor.classes[index] == label and int(probs.argmax()) == index
    assert probs.shape == (CLASSES,) and float(probs.sum()) == pytest.approx(1.0, abs=1e-5)
    with Image.open(image_path) as image:
        from_pil = predictor.predict(image)
    assert torch.allclose(from_pil.probabilities, probs, atol=1e-6)
    batch = predictor.predict_batch([image_path, sorted((trained.parent / "images" / "bag").iterdir())[0]])
    assert torch.allclose(batch[0].probabilities, probs, atol=1e-5)
    with pytest.raises(TypeError, match="PIL image or the path"):
        predictor.predict(42)


def test_tta_blends_the_plain_prediction_with_flipped_and_zoomed_views(trained):
    from src.inference.tta import tta_log_probabilities, tta_views
    from src.models.loading import load_classifier

    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    views = tta_views(images, scale=1.0)  # no zoom: four copies, then four mirrored copies
    assert len(views) == 8 and all(v.shape == images.shape for v in views)
    assert torch.equal(views[0], images) and torch.equal(views[4], images.flip(-1))
    zoomed = tta_views(images, scale=1.5)  # corners of the 6x6 upsampled image
    assert not torch.equal(zoomed[0], zoomed[3])

    net = load_classifier(trained / "checkpoints" / "best.ckpt").net
    batch = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        plain = net(batch).log_softmax(1)
        assert torch.allclose(tta_log_probabilities(net, batch, beta=1.0), plain, atol=1e-5)
        blended = tta_log_probabilities(net, batch).exp()
        mean_views = torch.stack([net(v).softmax(1) for v in tta_views(batch, 1.35)]).mean(0)
    assert torch.allclose(blended, 0.4 * plain.exp() + 0.6 * mean_views, atol=1e-5)
    assert torch.allclose(blended.sum(1), torch.ones(3), atol=1e-5)


def test_multi_label_tta_log_odds_are_those_of_the_blended_sigmoids_and_keep_saturated_cells():
    from src.inference.tta import tta_log_odds, tta_log_probabilities

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    with torch.no_grad():
        net[1].bias.copy_(torch.tensor([0.0, 1.0, 30.0, -30.0]))  # the last two sigmoids are 1.0 and ~1e-13
    batch = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        assert torch.allclose(tta_log_odds(net, batch, beta=1.0), net(batch), atol=1e-4)  # no views: the logits
        odds = tta_log_odds(net, batch)
        blended = tta_log_probabilities(net, batch, multi_label=True).exp()
    assert torch.allclose(odds.sigmoid(), blended, atol=1e-6)
    assert (odds[:, 2] > 25).all() and (odds[:, 3] < -25).all()  # where p = 1.0 in float32 keeps its log-odds


class LeftOrRight(torch.nn.Module):
    """Class 0 when the left half of the image is brighter than the right, else class 1, with a
    margin so large that the softmax is exactly 1 or 0."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        half = images.shape[-1] // 2
        left_minus_right = images[..., :half].mean(dim=(1, 2, 3)) - images[..., half:].mean(dim=(1, 2, 3))
        return torch.stack([100 * left_minus_right, -100 * left_minus_right], dim=1)


def test_tta_of_a_left_bright_image_is_the_known_blend():
    from src.inference.tta import tta_log_probabilities

    image = torch.zeros(1, 3, 20, 20)
    image[..., :10] = 1.0  # bright left half
    # The plain view says class 0. Zoomed x1.35 the edge moves to column 13.5 of 27, and a 20-column
    # crop from either end still has more bright columns in its left half than in its right: the
    # four unflipped views say class 0, the four flipped ones class 1.
    # fastai's blend: 0.4 * plain + 0.6 * mean(views) = 0.4 * (1, 0) + 0.6 * (0.5, 0.5).
    with torch.inference_mode():
        assert torch.allclose(tta_log_probabilities(LeftOrRight(), image).exp(), torch.tensor([[0.7, 0.3]]))
        assert torch.allclose(tta_log_probabilities(LeftOrRight(), image, beta=0.0).exp(), torch.tensor([[0.5, 0.5]]))
        assert torch.allclose(tta_log_probabilities(LeftOrRight(), image.flip(-1)).exp(), torch.tensor([[0.3, 0.7]]))


def test_evaluate_with_tta(trained, tmp_path):
    from src import Predictor

    ckpt = trained / "checkpoints" / "best.ckpt"
    plain = evaluate(task_cfg("evaluate", tmp_path / "plain", [f"ckpt_path={ckpt}", "data.num_workers=0"]))
    tta = evaluate(task_cfg("evaluate", tmp_path / "tta", [f"ckpt_path={ckpt}", "data.num_workers=0", "tta=true"]))
    assert tta["images"] == plain["images"]
    assert json.loads((tmp_path / "tta" / "metrics.json").read_text())["tta"] is True
    # each image's loss is that of the blend the Python API's TTA gives (checked above on a known answer)
    rows = read_rows(tmp_path / "tta" / "predictions.csv")
    root = trained.parent / "images"
    predictor = Predictor.from_checkpoint(ckpt, device="cpu", tta=True)
    blended = predictor.predict_batch([root / r["path"] for r in rows])
    expected = [-math.log(float(p.probabilities[predictor.classes.index(r["label"])])) for r, p in zip(rows, blended)]
    assert [float(r["loss"]) for r in rows] == pytest.approx(expected, abs=1e-4)
    assert tta["loss"] == pytest.approx(sum(expected) / len(expected), abs=1e-4)
    assert tta["loss"] != pytest.approx(plain["loss"], abs=1e-6)  # and it is not the plain prediction


def _folder_with_bad_files(root: Path) -> Path:
    folder = copy_sample(root / "inbox" / "nested", classes=2, per_class=2).parent
    good = sorted((folder / "nested" / "bag").iterdir())[0]
    (folder / "corrupt.png").write_bytes(good.read_bytes()[:60])  # a truncated PNG
    (folder / "notes.txt").write_text("not an image\n")
    (folder / ".hidden.png").write_bytes(good.read_bytes())  # hidden files are left out
    return folder


def test_predict_a_folder_with_a_corrupt_and_a_non_image_file(trained, tmp_path):
    from src.predict import predict

    folder = _folder_with_bad_files(tmp_path)
    summary = predict(task_cfg("predict", tmp_path / "out", [
        f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}", f"input={folder}", "topk=3", "tta=true",
    ]))
    rows = read_rows(tmp_path / "out" / "predictions.csv")
    assert len(rows) == 6 and summary["failed"] == 2
    failed = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
    assert set(failed) == {"corrupt.png", "notes.txt"}
    assert all("not a readable image" in reason for reason in failed.values())
    classes = json.loads((trained / "metrics.json").read_text())["classes"]
    for row in (r for r in rows if not r["error"]):
        assert row["prediction"] == row["class_1"] in classes and row["probability"] == row["probability_1"]
        assert float(row["probability_1"]) >= float(row["probability_2"]) >= float(row["probability_3"])


def test_predict_into_an_existing_folder_writes_predictions_csv_there(trained, tmp_path):
    from src.predict import predict

    folder = _folder_with_bad_files(tmp_path)
    (tmp_path / "results").mkdir()
    summary = predict(task_cfg("predict", tmp_path / "out", [
        f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}", f"input={folder}", f"output={tmp_path / 'results'}",
    ]))
    assert summary["output"] == str(tmp_path / "results" / "predictions.csv")
    assert len(read_rows(tmp_path / "results" / "predictions.csv")) == 6
    # an output that cannot be written fails before anything is predicted (a file where a folder must be)
    from src.predict import predictions_path

    with pytest.raises(OSError, match=r"output=.*cannot write .*expected a CSV path or a folder"):
        predictions_path(str(tmp_path / "results" / "predictions.csv" / "x.csv"), tmp_path / "out")


def test_predict_gives_a_symlink_loop_and_a_dangling_link_of_a_folder_their_error_rows(trained, tmp_path):
    from src.predict import input_files, predict

    folder = _folder_with_bad_files(tmp_path)
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    (folder / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    (folder / "linked folder").symlink_to(folder, target_is_directory=True)  # not followed: it loops
    assert {"loop.jpg", "gone.jpg"} <= {p.name for p in input_files(folder)}
    assert not any("linked folder" in p.parts for p in input_files(folder))
    summary = predict(task_cfg("predict", tmp_path / "out", [
        f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}", f"input={folder}",
    ]))
    failed = {Path(r["path"]).name: r["error"] for r in read_rows(tmp_path / "out" / "predictions.csv") if r["error"]}
    assert {"loop.jpg", "gone.jpg", "corrupt.png", "notes.txt"} == set(failed) and summary["failed"] == 4
    assert all(failed[name] for name in ("loop.jpg", "gone.jpg"))


def test_an_output_without_a_suffix_is_a_folder_for_predictions_csv(tmp_path):
    from src.predict import predictions_path

    assert predictions_path(str(tmp_path / "new" / "dir"), tmp_path / "run") == tmp_path / "new" / "dir" / "predictions.csv"
    assert (tmp_path / "new" / "dir").is_dir()
    assert predictions_path(str(tmp_path / "preds.csv"), tmp_path / "run") == tmp_path / "preds.csv"
    (tmp_path / "plain").write_text("")  # an existing file without a suffix is written over, as asked
    assert predictions_path(str(tmp_path / "plain"), tmp_path / "run") == tmp_path / "plain"


def test_predict_one_image_then_a_list_file_from_the_cli_with_its_exit_status(trained, tmp_path):
    import subprocess
    import sys

    from src.predict import predict

    image = sorted((trained.parent / "images" / "dress").iterdir())[0]
    ckpt = f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}"
    one = predict(task_cfg("predict", tmp_path / "one", [ckpt, f"input={image}", "topk=2"]))
    assert one["failed"] == 0 and [r.path for r in one["results"]] == [image]
    assert list(read_rows(tmp_path / "one" / "predictions.csv")[0]) == [
        "path", "prediction", "probability", "class_1", "probability_1", "class_2", "probability_2", "error"]

    listing = tmp_path / "paths.txt"
    listing.write_text(f"{image}\n# a comment\nmissing.png\n")
    listed = subprocess.run(
        [sys.executable, "-m", "src.predict", ckpt, f"input={listing}", f"hydra.run.dir={tmp_path / 'listed'}"],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120,
    )
    assert listed.returncode == 1, listed.stderr  # missing.png failed, the image did not
    assert "2 files, 1 failed" in listed.stdout
    rows = read_rows(tmp_path / "listed" / "predictions.csv")
    assert [Path(r["path"]).name for r in rows] == [image.name, "missing.png"]
    assert rows[0]["prediction"] and "No such file" in rows[1]["error"]


@pytest.fixture(scope="module")
def real_images_at_training_size(trained) -> torch.Tensor:
    """Six real photos (one per class), resized to the 32 px training size, as uint8 (N, 3, H, W)."""
    from PIL import Image

    images = []
    for folder in sorted(p for p in (trained.parent / "images").iterdir()):
        with Image.open(sorted(folder.iterdir())[-1]) as image:
            resized = image.convert("RGB").resize((32, 32), Image.BILINEAR)
        images.append(torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1))
    return torch.stack(images)


def test_onnx_export_matches_pytorch_on_real_images(trained, tmp_path, real_images_at_training_size):
    ort = require_extra("onnxruntime", "export")
    from PIL import Image

    from src import Predictor
    from src.inference.exporting import export, serving_model

    ckpt = trained / "checkpoints" / "best.ckpt"
    paths = export(task_cfg("export", tmp_path, [f"ckpt_path={ckpt}", "format=onnx"]))
    info = json.loads(Path(paths["classes"]).read_text())
    assert info["classes"] == json.loads((trained / "metrics.json").read_text())["classes"] and info["size"] == 32

    # one self-contained file: it runs from wherever it is copied to
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".log") == ["classes.json", "model.onnx"]
    copied = tmp_path / "copied" / "model.onnx"
    copied.parent.mkdir()
    shutil.copy(paths["model"], copied)
    session = ort.InferenceSession(str(copied))
    images = real_images_at_training_size
    model, _, _ = serving_model(ckpt)
    with torch.inference_mode():
        expected = model(images)
    for batch in (images, images[:1]):  # the batch size is dynamic
        got = torch.from_numpy(session.run(None, {"images": batch.numpy()})[0])
        assert got.shape == (len(batch), CLASSES)
        assert (got - expected[: len(batch)]).abs().max() < 1e-4
    # the same numbers as the Python API on the same pictures, at the exported model's fp32
    predictor = Predictor.from_checkpoint(ckpt, device="cpu", precision="32-true")
    pictures = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
    api = torch.stack([p.probabilities for p in predictor.predict_batch(pictures)])
    assert (expected - api).abs().max() < 1e-4
    # other sizes are resized inside
    larger = torch.nn.functional.interpolate(images.float(), size=(40, 56)).to(torch.uint8)
    assert session.run(None, {"images": larger.numpy()})[0].shape == (len(images), CLASSES)


def test_torch_export_matches_pytorch_and_loads_without_this_project(trained, tmp_path, real_images_at_training_size):
    import subprocess
    import sys

    from src.inference.exporting import export, serving_model

    ckpt = trained / "checkpoints" / "best.ckpt"
    paths = export(task_cfg("export", tmp_path, [f"ckpt_path={ckpt}", "format=torch_export"]))
    assert paths["model"].endswith("model.pt2")
    images = real_images_at_training_size
    model, _, _ = serving_model(ckpt)
    with torch.inference_mode():
        expected = model(images)
    torch.save(images, tmp_path / "images.pt")
    # a fresh interpreter outside the repository, with `src` unimportable: torch alone runs the file
    script = (
        "import sys, torch; sys.modules['src'] = None\n"
        f"program = torch.export.load({paths['model']!r}).module()\n"
        f"images = torch.load({str(tmp_path / 'images.pt')!r})\n"
        "with torch.inference_mode():\n"
        "    for batch in (images, images[:1], torch.nn.functional.interpolate(images.float(), size=(40, 56)).to(torch.uint8)):\n"
        "        torch.save(program(batch), f'{batch.shape[0]}x{batch.shape[2]}.pt')\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, timeout=300)
    for name, rows in ((f"{len(images)}x32", len(images)), ("1x32", 1)):  # the batch size is dynamic
        got = torch.load(tmp_path / f"{name}.pt")
        assert got.shape == (rows, CLASSES)
        assert (got - expected[:rows]).abs().max() < 1e-4
    assert torch.load(tmp_path / f"{len(images)}x40.pt").shape == (len(images), CLASSES)  # resized inside


def test_torchscript_and_unknown_formats_name_the_ones_offered(trained, tmp_path):
    from src.inference.exporting import export

    ckpt = trained / "checkpoints" / "best.ckpt"
    with pytest.raises(ValueError, match="format=torchscript is no longer offered.*format=torch_export"):
        export(task_cfg("export", tmp_path, [f"ckpt_path={ckpt}", "format=torchscript"]))
    with pytest.raises(ValueError, match="format='tflite'; choose one of onnx, torch_export"):
        export(task_cfg("export", tmp_path, [f"ckpt_path={ckpt}", "format=tflite"]))
