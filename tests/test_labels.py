"""Label sources (folder, csv, regex) and multi-label, on real images: train a few batches, evaluate, predict."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from src.runs.config_checks import check_train_config
from src.data.labels.sources import CsvLabels, FolderLabels, RegexLabels
from src.models.components.backbones import build_backbone
from src.models.components.classifier import ImageClassifier
from src.models.loading import load_classifier
from src.core.problems import ConfigError
from src.evaluate import evaluate
from src.models.multi_label_metrics import fbeta_per_sample
from src.models.loading import read_checkpoint
from src.predict import predict
from src.runs.training import train
from tests.conftest import TINY_OVERRIDES, compose_config, copy_sample

# What `auto` resolves to changes these results: `make test-other-cpu` runs them as the other kind of CPU.
pytestmark = pytest.mark.precision


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def flat_images(dest: Path, classes: int, per_class: int) -> list[tuple[str, str]]:
    """Real photos moved out of their class folders into ``dest/img/``: (path relative to dest, class)."""
    copy_sample(dest / "by_class", classes=classes, per_class=per_class)
    (dest / "img").mkdir()
    found = []
    for folder in sorted((dest / "by_class").iterdir()):
        for image in sorted(folder.iterdir()):
            name = f"img/{len(found):03d}.png"
            image.rename(dest / name)
            found.append((name, folder.name))
    shutil.rmtree(dest / "by_class")
    return found


def planet_folder(root: Path) -> Path:
    """24 real photos in ``root/img/`` and ``root/tags.csv``: each its garment class, and "even" on every
    other one (cells like "bag even"), a multi-label table like fastai's planet."""
    images = flat_images(root, classes=3, per_class=8)
    rows = [[name, f"{label} even" if i % 2 == 0 else label] for i, (name, label) in enumerate(images)]
    write_rows(root / "tags.csv", ["image_name", "tags"], rows)
    return root


# Trains on planet_folder's table, a quarter of the images for validation.
MULTI_LABEL_CSV = ["data/labels=csv", "data.labels.csv_path=tags.csv", "data.labels.path_column=image_name",
                   "data.labels.label_column=tags", "data.labels.label_delim=' '", "data.valid_pct=0.25"]


def run_cfg(tmp_path: Path, root: Path, overrides: list[str], config_name: str = "train") -> DictConfig:
    base = [*TINY_OVERRIDES, f"data.root={root}"] if config_name == "train" else []
    cfg = compose_config([*base, *overrides], config_name=config_name)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    return cfg


def test_csv_labels_with_is_valid_fix_the_split_train_and_evaluate(tmp_path):
    root = tmp_path / "photos"
    images = flat_images(root, classes=3, per_class=8)
    rows = [[name, label, "True" if i % 4 == 0 else "False"] for i, (name, label) in enumerate(images)]
    rows.append(["img/gone.png", images[0][1], "false"])  # a row whose file is missing: a bad file, not a crash
    write_rows(root / "labels.csv", ["name", "label", "is_valid"], rows)

    run = tmp_path / "run"
    metrics = train(run_cfg(run, root, ["data/labels=csv", "data.labels.csv_path=labels.csv",
                                        "data.labels.valid_column=is_valid"]))

    split = read_rows(run / "split.csv")
    assert {r["path"] for r in split if r["subset"] == "valid"} == {r[0] for r in rows if r[2] == "True"}
    assert {r["path"] for r in split if r["subset"] == "train"} == {r[0] for r in rows[:-1] if r[2] == "False"}
    assert (sum(r["subset"] == "valid" for r in split), sum(r["subset"] == "train" for r in split)) == (6, 18)
    assert {r["path"]: r["label"] for r in split} == dict(images)
    classes = sorted({label for _, label in images})
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["classes"] == classes and summary["multi_label"] is False and summary["bad_files"] == 1
    bad = read_rows(run / "bad_files.csv")
    assert [r["path"] for r in bad] == ["img/gone.png"] and bad[0]["reason"].startswith("missing")
    hparams = read_checkpoint(run / "checkpoints" / "last.ckpt")["hyper_parameters"]
    assert hparams["classes"] == classes and hparams["multi_label"] is False

    evaluated = evaluate(run_cfg(tmp_path / "eval", root, [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
                                                           "data.num_workers=0"], "evaluate"))
    assert evaluated["images"] == 6
    assert evaluated["error_rate"] == pytest.approx(metrics["val/error_rate"], abs=1e-4)
    assert evaluated["loss"] == pytest.approx(metrics["val/loss"], abs=1e-4)


def test_regex_labels_from_file_names_list_the_file_that_does_not_match(tmp_path):
    root = tmp_path / "pets"
    copy_sample(tmp_path / "src", classes=2, per_class=10)
    root.mkdir()
    for folder in sorted((tmp_path / "src").iterdir()):  # Oxford-IIIT Pets names: <breed>_<number>.png
        for number, image in enumerate(sorted(folder.iterdir()), start=1):
            image.rename(root / f"{folder.name}_{number}.png")
    unmatched = root / "scan of the box.png"
    shutil.copy(root / f"{sorted(p.name for p in (tmp_path / 'src').iterdir())[0]}_1.png", unmatched)

    run = tmp_path / "run"
    train(run_cfg(run, root, ["data/labels=regex", r"data.labels.pattern='([^/]+)_\d+\.png$'"]))

    split = read_rows(run / "split.csv")
    assert len(split) == 20 and "scan of the box.png" not in {r["path"] for r in split}
    assert all(r["path"].startswith(r["label"] + "_") for r in split)
    assert sorted(r["label"] for r in split if r["subset"] == "valid") == ["ankle_boot", "ankle_boot", "bag", "bag"]
    bad = read_rows(run / "bad_files.csv")
    assert [r["path"] for r in bad] == ["scan of the box.png"]
    assert bad[0]["reason"].startswith("no label: data.labels.pattern")
    assert "does not match 'scan of the box.png'" in bad[0]["reason"]
    assert json.loads((run / "metrics.json").read_text())["classes"] == ["ankle_boot", "bag"]

    evaluated = evaluate(run_cfg(tmp_path / "eval", root, [f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}",
                                                           "data.num_workers=0"], "evaluate"))
    assert evaluated["images"] == 4 and (tmp_path / "eval" / "confusion_matrix.png").is_file()


def test_multi_label_csv_trains_evaluates_per_class_and_predicts_every_class_above_the_threshold(tmp_path):
    root = planet_folder(tmp_path / "planet")
    rows = read_rows(root / "tags.csv")

    run = tmp_path / "run"
    metrics = train(run_cfg(run, root, MULTI_LABEL_CSV))

    classes = ["ankle_boot", "bag", "coat", "even"]
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["classes"] == classes and summary["multi_label"] is True
    assert 0.0 <= metrics["val/fbeta"] <= 1.0
    assert metrics["val/error_rate"] == pytest.approx(1.0 - metrics["val/accuracy"], abs=1e-6)
    hparams = read_checkpoint(run / "checkpoints" / "last.ckpt")["hyper_parameters"]
    assert hparams["multi_label"] is True and hparams["threshold"] == 0.5
    split = read_rows(run / "split.csv")
    assert sum(r["subset"] == "valid" for r in split) == 6  # round(0.25 * 24), a random split
    expected = {row["image_name"]: " ".join(sorted(row["tags"].split())) for row in rows}
    assert {r["path"]: r["label"] for r in split} == expected

    out = tmp_path / "eval"
    evaluated = evaluate(run_cfg(out, root, [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "data.num_workers=0"],
                                 "evaluate"))
    assert evaluated["images"] == 6
    assert evaluated["error_rate"] == pytest.approx(metrics["val/error_rate"], abs=1e-4)
    assert evaluated["fbeta"] == pytest.approx(metrics["val/fbeta"], abs=1e-4)
    assert evaluated["loss"] == pytest.approx(metrics["val/loss"], abs=1e-4)
    written = json.loads((out / "metrics.json").read_text())
    valid_labels = [r["label"].split() for r in split if r["subset"] == "valid"]
    assert set(written["per_class"]) == set(classes)
    for name, values in written["per_class"].items():
        assert set(values) == {"precision", "recall", "f1", "support"}
        assert values["support"] == sum(name in labels for labels in valid_labels)
    assert "skipped" in written and not (out / "confusion_matrix.png").exists()
    assert {r["path"]: r["label"] for r in read_rows(out / "predictions.csv")} == {
        r["path"]: r["label"] for r in split if r["subset"] == "valid"}

    ckpt = run / "checkpoints" / "last.ckpt"
    for threshold, check in [(None, "checkpoint's"), (0.001, "all")]:
        pred_dir = tmp_path / f"predict-{threshold}"
        summary = predict(run_cfg(pred_dir, root, [f"ckpt_path={ckpt}", f"input={root / 'img'}", "topk=4",
                                                   f"threshold={'null' if threshold is None else threshold}"], "predict"))
        assert len(summary["results"]) == 24 and summary["failed"] == 0
        for result, row in zip(summary["results"], read_rows(pred_dir / "predictions.csv")):
            names, indices, probs = result.prediction
            chosen = {i for i, p in enumerate(probs.tolist()) if p > (threshold or 0.5)}
            assert set(indices) == chosen and names == tuple(classes[i] for i in indices)
            assert row["prediction"] == " ".join(names)
            assert len(row["probability"].split()) == len(names)
            if check == "all":
                assert set(names) == set(classes)  # independent sigmoids: every class can be above a low threshold

    from src.inference.exporting import serving_model
    model, _, _ = serving_model(ckpt)
    with torch.inference_mode():
        probabilities = model(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert probabilities.shape == (2, 4) and not torch.allclose(probabilities.sum(1), torch.ones(2))


def test_multi_label_evaluate_gives_the_val_loss_of_a_confident_model(tmp_path):
    """evaluate's loss is training's BCE-with-logits, also where the sigmoid rounds to 0 or 1 in float32."""
    root = planet_folder(tmp_path / "planet")
    run = tmp_path / "run"
    # A head learning rate 100 times the tiny run's: after 6 steps logits pass +-17, where the sigmoid
    # is 1.0 in float32 (the binary cross-entropy of probabilities caps such a cell's loss at 100).
    train(run_cfg(run, root, [*MULTI_LABEL_CSV, "schedule.stages=[{name:head,epochs:2,lr:[0.3],freeze_to:-1}]"]))
    logged = json.loads((run / "metrics.json").read_text())["final"]  # the epoch last.ckpt was saved at
    evaluated = evaluate(run_cfg(tmp_path / "eval", root, [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
                                                           "data.num_workers=0"], "evaluate"))
    assert evaluated["loss"] == pytest.approx(logged["val/loss"], abs=1e-4)
    assert evaluated["error_rate"] == pytest.approx(logged["val/error_rate"], abs=1e-4)
    mean_loss = sum(float(r["loss"]) for r in read_rows(tmp_path / "eval" / "predictions.csv")) / evaluated["images"]
    assert mean_loss == pytest.approx(evaluated["loss"], abs=1e-4)


def test_fbeta_per_sample_is_fastai_v1s():
    probs = torch.tensor([[0.9, 0.6, 0.1], [0.2, 0.2, 0.2], [0.7, 0.1, 0.8]])
    targets = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 0, 1]])
    # image 1: predicted {0, 1}, true {0, 2}: precision = recall = 1/2, F2 = 5 * 1/4 / (4/2 + 1/2) = 1/2;
    # image 2: nothing predicted: 0; image 3: exact: 1.
    assert fbeta_per_sample(probs, targets, threshold=0.5).tolist() == pytest.approx([0.5, 0.0, 1.0], abs=1e-6)


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    flat_images(root, classes=2, per_class=3)
    return root


@pytest.mark.parametrize("table, source, message", [
    ("name,tags\nimg/000.png,a\n", {}, r"data.labels.label_column='label' is not a column of .*labels.csv \(its columns: "
                                       r"name, tags.*set data.labels.label_column to one of them"),
    ("name,label,is_valid\nimg/000.png,a,true\nimg/001.png,b,yes\n", {"valid_column": "is_valid"},
     r"labels.csv line 3: is_valid='yes'; expected true/false or 1/0"),
    ("name,label\nimg/000.png,a\nimg/001.png,\n", {}, r"labels.csv line 3: the label is empty"),
    ("name,label\nimg/000.png,a\nimg/000.png,b\n", {}, r"line 3: 'img/000.png' is also on labels.csv line 2"),
])
def test_bad_label_tables_are_named_with_the_fix(labelled, table, source, message):
    (labelled / "labels.csv").write_text(table)
    with pytest.raises(ValueError, match=message):
        CsvLabels(csv_path="labels.csv", **source).index(labelled, valid_pct=0.2, seed=0)


@pytest.mark.parametrize("valid_column", ["is_valid", None])
def test_a_tables_validation_images_come_in_a_seeded_random_order(tmp_path, valid_column):
    # a table sorted by class (its paths too) lists its validation rows class by class: in that order
    # limit_val_batches would see the first class alone
    root = tmp_path / "photos"
    images = flat_images(root, classes=3, per_class=12)
    write_rows(root / "labels.csv", ["name", "label", "is_valid"],
               [[name, label, "true" if i % 2 else "false"] for i, (name, label) in enumerate(images)])
    source = CsvLabels(csv_path="labels.csv", valid_column=valid_column)
    index = source.index(root, valid_pct=0.5, seed=0)
    valid_names = sorted(Path(s.path).relative_to(root).as_posix() for s in index.valid)
    if valid_column:
        assert valid_names == [name for i, (name, _) in enumerate(images) if i % 2]
    assert len(valid_names) == 18
    labels = [s.label for s in index.valid]
    assert labels != sorted(labels) and len(set(labels[:6])) > 1  # in table order the first 6 are one class
    assert source.index(root, valid_pct=0.5, seed=0).valid == index.valid  # the same order every time
    assert source.index(root, valid_pct=0.5, seed=1).valid != index.valid


def test_a_table_whose_every_file_is_missing_names_one_and_why(labelled):
    from src.data.files.scan import FileScan

    write_rows(labelled / "labels.csv", ["name", "label"], [["img/900.png", "a"], ["img/901.png", "b"]])
    # Said in the error itself: the run directory that would hold bad_files.csv may be removed with the failed run.
    with pytest.raises(ValueError, match=r"none of the 2 image\(s\) labelled by data/labels=csv under data.root=.* "
                                         r"can be read \(kept 0 image\(s\), skipped 2 .*\), e\.g\. 'img/900\.png' "
                                         r"\(\w+: .+\); fix the paths in the labels or the files"):
        CsvLabels(csv_path="labels.csv").index(labelled, valid_pct=0.2, seed=0, scan=FileScan())


def test_a_class_whose_every_file_is_missing_is_named_in_a_warning(labelled, caplog):
    from src.data.files.scan import FileScan

    rows = [[f"img/00{i}.png", "ab"[i % 2]] for i in range(6)] + [["img/900.png", "ghost"], ["img/901.png", "ghost"]]
    write_rows(labelled / "labels.csv", ["name", "label"], rows)
    index = CsvLabels(csv_path="labels.csv").index(labelled, valid_pct=0.34, seed=0, scan=FileScan())
    assert index.classes == ["a", "b"] and len(index.train) + len(index.valid) == 6
    assert "1 class(es) lost every file to unreadable or missing entries and are left out of the model: 'ghost'" \
        in caplog.text


def test_a_tsv_with_the_tab_written_as_backslash_t(labelled):
    (labelled / "labels.tsv").write_text("file\tbreed\n" + "".join(f"img/00{i}.png\t{'ab'[i % 2]}\n" for i in range(6)))
    index = CsvLabels(csv_path="labels.tsv", path_column="file", label_column="breed",
                      csv_delimiter="\\t").index(labelled, valid_pct=0.34, seed=0)
    assert index.classes == ["a", "b"] and (len(index.train), len(index.valid)) == (4, 2)
    assert {s.path.name: s.label for s in index.train + index.valid} == {f"00{i}.png": i % 2 for i in range(6)}


def test_label_settings_are_checked_before_training(labelled):
    cfg = compose_config([*TINY_OVERRIDES, f"data.root={labelled}", "data/labels=regex",
                          "data.labels.pattern='no group'", "data.labels.label_delim=''"])
    with pytest.raises(ConfigError) as error:
        check_train_config(cfg, num_layer_groups=3)
    keys = [problem.key for problem in error.value.problems]
    assert keys == ["data.labels.label_delim", "data.labels.pattern"]
    assert "a capture group (...) around the label" in str(error.value)
    cfg = compose_config([*TINY_OVERRIDES, f"data.root={labelled}", "data/labels=csv", "data.labels.csv_path=nope.csv"])
    with pytest.raises(ConfigError, match=r"data.labels.csv_path='nope.csv': expected a table of labels .* "
                                          "relative to data.root"):
        check_train_config(cfg, num_layer_groups=3)


def test_each_source_takes_only_its_own_settings(labelled):
    """The config group gives each source its own keys: a setting of another source is refused by Hydra."""
    with pytest.raises(ConfigCompositionException, match="Could not override 'data.labels.csv_path'"):
        compose_config([f"data.root={labelled}", "data/labels=regex", "data.labels.csv_path=labels.csv"])
    with pytest.raises(ConfigCompositionException, match="Could not override 'data.labels.label_delim'"):
        compose_config([f"data.root={labelled}", "data.labels.label_delim=' '"])  # folder: one class per folder
    sources = {name: instantiate(compose_config([f"data/labels={name}"]).data.labels)
               for name in ("folder", "csv", "regex")}
    assert sources == {"folder": FolderLabels(), "csv": CsvLabels(), "regex": RegexLabels()}  # YAML and class agree


def test_the_old_key_data_labels_csv_is_named_with_the_new_form(labelled):
    cfg = compose_config([*TINY_OVERRIDES, f"data.root={labelled}", "data.labels=csv"])
    with pytest.raises(ConfigError, match=r"data.labels='csv': expected a label source.*write data/labels=csv"):
        check_train_config(cfg, num_layer_groups=3)


def _old_style_checkpoint(path: Path, root: Path, labels: dict) -> Path:
    """A checkpoint as src.train wrote it before the data/labels config group: ``data.labels`` a name
    and every source's settings next to it."""
    model = OmegaConf.to_container(compose_config(TINY_OVERRIDES).model)
    data = {"root": str(root), "labels": "folder", "csv_path": None, "path_column": "name", "label_column": "label",
            "valid_column": None, "csv_delimiter": ",", "label_delim": None, "pattern": None, "valid_pct": 0.2,
            "seed": 0, "size": 32, "resize_method": "crop", "interpolation": "bilinear",
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "batch_size": 8, "num_workers": 0,
            "_target_": "src.data.datamodule.ImageFolderDataModule", **labels}
    net = ImageClassifier(build_backbone(model["backbone"]["name"], weights=None), num_classes=2, **model["head"])
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "hyper_parameters": {"classes": ["a", "b"], "head": model["head"],
                                     "multi_label": bool(labels.get("label_delim")),
                                     "run_config": OmegaConf.to_yaml({"model": model, "data": data})}}, path)
    return path


@pytest.mark.parametrize("labels, expected", [
    ({}, FolderLabels()),
    ({"labels": "csv", "csv_path": "labels.csv", "label_column": "tags", "label_delim": " "},
     CsvLabels(csv_path="labels.csv", label_column="tags", label_delim=" ")),
    ({"labels": "regex", "pattern": "([^/]+)_\\d+"}, RegexLabels(pattern="([^/]+)_\\d+")),
])
def test_a_checkpoint_from_before_the_labels_config_group_still_loads(tmp_path, labelled, labels, expected):
    (labelled / "labels.csv").write_text("name,tags\n" + "".join(f"img/00{i}.png,{'ab'[i % 2]}\n" for i in range(6)))
    loaded = load_classifier(_old_style_checkpoint(tmp_path / "old.ckpt", labelled, labels))
    assert instantiate(loaded.config.data.labels) == expected
    assert not {"csv_path", "pattern", "label_delim"} & set(loaded.config.data)  # the flat keys are gone
    assert loaded.label_delim == expected.label_delim
    datamodule = instantiate(loaded.config.data, split_csv=None)  # what src.inspect rebuilds from a checkpoint
    assert datamodule.label_source == expected
