"""``python -m src.audit``: known answers on real Fashion-MNIST photos with problems planted in them."""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from omegaconf import open_dict
from PIL import Image

from tests.conftest import PROJECT_ROOT, compose_config, copy_sample, headless_chromium, require_extra, require_programs

require_extra("cleanlab", "audit")

# A random ResNet18 at 32 px (nothing to download): its centred embeddings separate these three classes
# well enough for a moved label, and copies of one photo stay near 1.
BODY = ["model.backbone.name=resnet18", "model.backbone.weights=null", "data.size=32", "data.num_workers=0",
        "data.batch_size=32"]
CLASSES = 3
PER_CLASS = 20


def audit_config(root: Path, output_dir: Path, *overrides: str):
    cfg = compose_config([*BODY, f"data.root={root}", *overrides], config_name="audit")
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def plant_problems(root: Path) -> dict[str, str]:
    """An exact copy, a resized copy (x1.5) and a label moved to another class; their paths under ``root``."""
    first, second, third = sorted(p for p in root.iterdir() if p.is_dir())
    photos = sorted(first.glob("*.png"))
    shutil.copy(photos[0], first / "exact copy.png")
    image = Image.open(photos[1])
    image.resize((42, 42), Image.Resampling.BICUBIC).save(first / "resized copy.png")
    moved = sorted(second.glob("*.png"))[3]
    moved.rename(third / "moved.png")
    return {"exact": f"{first.name}/{photos[0].name}", "exact copy": f"{first.name}/exact copy.png",
            "resized": f"{first.name}/{photos[1].name}", "resized copy": f"{first.name}/resized copy.png",
            "moved": f"{third.name}/moved.png", "true label": second.name, "given label": third.name}


@pytest.fixture(scope="module")
def audited(module_tmp_path):
    """One audit of a folder with planted problems, and a second audit of the same folder."""
    from src.audit import audit

    root = copy_sample(module_tmp_path / "images", classes=CLASSES, per_class=PER_CLASS)
    planted = plant_problems(root)
    for path in root.rglob("*.png"):  # older than the caches' racy window (a file written this second may change)
        os.utime(path, (path.stat().st_atime - 60, path.stat().st_mtime - 60))
    first = audit(audit_config(root, module_tmp_path / "audit"))
    again = audit(audit_config(root, module_tmp_path / "again"))
    return root, planted, first, again


def names(findings, rows) -> set[str]:
    return {findings.paths[i].relative_to(findings.root).as_posix() for i in rows}


def test_exact_and_resized_copies_are_grouped_and_a_second_audit_embeds_nothing(audited):
    _, planted, first, again = audited
    findings = first["findings"]
    groups = [names(findings, g.members) for g in findings.groups]
    assert {planted["exact"], planted["exact copy"]} in groups
    assert any({planted["resized"], planted["resized copy"]} <= g for g in groups)
    exact = next(g for g in findings.groups if names(findings, g.members) == {planted["exact"], planted["exact copy"]})
    assert exact.exact and exact.similarity == 1.0
    with open(first["csvs"]["duplicates"], newline="") as f:
        assert {planted["exact copy"], planted["resized copy"]} <= {row["path"] for row in csv.DictReader(f)}
    assert first["embedded"] == CLASSES * PER_CLASS + 2 and again["embedded"] == 0
    assert again["summary"] == first["summary"]


def test_a_moved_label_is_ranked_first_with_the_true_class_suggested(audited):
    _, planted, first, _ = audited
    findings = first["findings"]
    top = findings.label_issues[0]
    assert names(findings, [top.index]) == {planted["moved"]}
    assert findings.classes[top.given] == planted["given label"]
    assert findings.classes[top.suggested] == planted["true label"]
    with open(first["csvs"]["label_issues"], newline="") as f:
        row = next(csv.DictReader(f))
    assert (row["path"], row["suggested_label"]) == (planted["moved"], planted["true label"])


def test_a_copy_across_train_and_valid_is_flagged_as_a_leak(tmp_path):
    from src.audit import audit

    root = tmp_path / "split"
    copy_sample(root / "train", classes=CLASSES, per_class=PER_CLASS)
    copy_sample(root / "valid", classes=CLASSES, per_class=PER_CLASS)  # the same photos: keep the first 5 only
    for folder in (root / "valid").iterdir():
        for photo in sorted(folder.glob("*.png"))[5:]:
            photo.unlink()
    leaked = sorted((root / "valid").iterdir())[0]
    photo = sorted(leaked.glob("*.png"))[0]
    shutil.copy(photo, root / "valid" / leaked.name / "only in valid.png")  # a copy within valid: not a leak
    result = audit(audit_config(root, tmp_path / "audit"))
    findings = result["findings"]
    by_members = {frozenset(names(findings, g.members)): g for g in findings.groups}
    pair = frozenset({f"train/{leaked.name}/{photo.name}", f"valid/{leaked.name}/{photo.name}",
                      f"valid/{leaked.name}/only in valid.png"})
    assert pair in by_members and "leak" in by_members[pair].flags
    assert findings.valid_in_leaks == CLASSES * 5 + 1  # every validation photo is also in train/
    assert any("validation error rate can be too low" in line for line in result["summary"])


def datamodule_index(root: Path, decisions: Path | None):
    from src.runs.builder import build_datamodule

    cfg = compose_config(["data.num_workers=0", f"data.root={root}"]
                         + ([f"data.decisions={decisions}"] if decisions else []))
    return build_datamodule(cfg.data, split_csv=None, bad_files_csv=None).index


def test_the_decisions_file_changes_what_a_run_trains_on(audited, tmp_path):
    root, planted, first, _ = audited
    raw = datamodule_index(root, None)
    with open(first["decisions"], newline="") as f:
        rows = list(csv.DictReader(f))
    drops = {r["path"] for r in rows if r["action"] == "drop"}
    assert planted["exact copy"] in drops or planted["exact"] in drops
    assert {r["path"]: r["new_label"] for r in rows if r["action"] == "relabel"}[planted["moved"]] == planted["true label"]
    cleaned = datamodule_index(root, Path(first["decisions"]))
    assert len(cleaned.train) + len(cleaned.valid) == len(raw.train) + len(raw.valid) - len(drops)
    label_of = {s.path.relative_to(root).as_posix(): cleaned.classes[s.label] for s in cleaned.train + cleaned.valid}
    assert label_of[planted["moved"]] == planted["true label"]
    assert not drops & set(label_of)
    # the split is training's: every image left keeps its subset
    raw_subset = {s.path: "train" for s in raw.train} | {s.path: "valid" for s in raw.valid}
    assert all(raw_subset[s.path] == "train" for s in cleaned.train)

    edited = tmp_path / "decisions.csv"
    edited.write_text("path,action,new_label,reason\nnot/there.png,drop,,\n")
    with pytest.raises(ValueError, match="not/there.png"):
        datamodule_index(root, edited)
    edited.write_text(f"path,action,new_label,reason\n{planted['moved']},relabel,unicorn,\n")
    with pytest.raises(ValueError, match="unicorn"):
        datamodule_index(root, edited)


def test_bad_input_is_refused_clearly_and_unreadable_files_are_reported(tmp_path):
    from src.audit import audit

    one = copy_sample(tmp_path / "one", classes=1, per_class=5)
    with pytest.raises(ValueError, match="only one class"):
        audit(audit_config(one, tmp_path / "a"))
    (tmp_path / "none" / "empty").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images under"):
        audit(audit_config(tmp_path / "none", tmp_path / "b"))
    not_a_checkpoint = tmp_path / "weights.ckpt"
    not_a_checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="weights.ckpt"):
        audit(audit_config(one, tmp_path / "c", f"ckpt_path={not_a_checkpoint}"))
    import torch
    import torchvision

    other = tmp_path / "resnet34.pth"  # another architecture's weights for the resnet18 body
    torch.save(torchvision.models.resnet34().state_dict(), other)
    root = copy_sample(tmp_path / "messy", classes=2, per_class=8)
    (root / sorted(os.listdir(root))[0] / "truncated.png").write_bytes(
        next((root / sorted(os.listdir(root))[0]).glob("*.png")).read_bytes()[:60])
    with pytest.raises(ValueError, match="resnet34.pth"):
        audit(audit_config(root, tmp_path / "d", f"model.backbone.weights={other}"))
    result = audit(audit_config(root, tmp_path / "e"))
    assert result["images"] == 16
    bad = (tmp_path / "e" / "bad_files.csv").read_text()
    assert "truncated.png" in bad and "truncated or corrupt" in bad


def test_the_page_shows_a_duplicate_group_side_by_side_in_chromium(audited, tmp_path):
    require_programs("chromium", "chromedriver")
    require_extra("selenium.webdriver", "dev")  # selenium drives Chromium
    from selenium.webdriver.common.by import By

    _, planted, first, _ = audited
    browser = headless_chromium(tmp_path / "chromium-profile")
    try:
        browser.set_window_size(1280, 900)
        browser.get(Path(first["report"]).as_uri())
        groups = browser.find_elements(By.CSS_SELECTOR, "#duplicates .group")
        shown = {frozenset(f.get_attribute("data-path") for f in g.find_elements(By.CSS_SELECTOR, "figure")): g
                 for g in groups}
        group = shown[frozenset({planted["exact"], planted["exact copy"]})]
        images = group.find_elements(By.CSS_SELECTOR, "img")
        assert all(int(img.get_attribute("naturalWidth")) == 28 for img in images)
        assert images[0].location["y"] == images[1].location["y"]  # side by side
        assert images[1].location["x"] > images[0].location["x"]
        issue = browser.find_element(By.CSS_SELECTOR, "#label-issues .item figure")
        assert issue.get_attribute("data-path") == planted["moved"]
        browser.save_screenshot(str(tmp_path / "audit-report.png"))
        if os.environ.get("SCREENSHOT_DIR"):
            shutil.copy(tmp_path / "audit-report.png", Path(os.environ["SCREENSHOT_DIR"]) / "audit-report.png")
    finally:
        browser.quit()


def test_blocked_nearest_neighbours_are_those_of_the_whole_similarity_matrix():
    from src.auditing.neighbours import nearest_neighbours

    vectors = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sims, index = nearest_neighbours(vectors, 4, block=64)  # blocks that do not divide 300
    whole = vectors @ vectors.T
    np.fill_diagonal(whole, -np.inf)
    expected = np.argsort(-whole, axis=1)[:, :4]
    assert (index == expected).all()
    assert np.allclose(sims, np.take_along_axis(whole, expected, axis=1), atol=1e-5)


def test_exact_copies_pair_by_their_bytes_whatever_their_embeddings_say():
    from src.auditing.duplicates import duplicate_pairs, group_duplicates, proposed_pairs

    neighbours = np.array([[1, 2], [0, 2], [0, 1], [0, 1]])
    assert proposed_pairs(np.zeros((4, 2)), neighbours, threshold=0.9, candidates=2) == {}
    pairs = duplicate_pairs(["a", "b", "a", ""], {})
    assert pairs == {(0, 2): 1.0}  # same bytes; 3 could not be read (no digest)
    (group,) = group_duplicates(pairs, ["a", "b", "a", ""], [0, 0, 1, 0], ["train", "train", "valid", "train"])
    assert group.members == (0, 2) and group.exact and group.flags == ("leak", "label conflict")


def pixel_threshold() -> float:
    return compose_config(["data.num_workers=0"], config_name="audit").duplicates.pixel_threshold


SAMPLE = PROJECT_ROOT / "data" / "fashion-mnist-sample"


def test_resized_recompressed_and_cropped_copies_of_a_real_photo_are_confirmed_by_their_pixels():
    import io

    from src.auditing.pixel_match import grey_thumbnail, pixel_agreement

    photo = Image.open(sorted((SAMPLE / "t-shirt_top").glob("*.png"))[0]).convert("RGB")
    side = photo.width
    buffer = io.BytesIO()
    photo.resize((side * 3 // 2, side * 3 // 2), Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=75)
    resized_recompressed = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    cropped = photo.crop((2, 2, side - 2, side - 2)).resize((side, side), Image.Resampling.BICUBIC)
    thumbnails = np.stack([grey_thumbnail(image) for image in (photo, resized_recompressed, cropped)])
    assert thumbnails.shape == (3, 32, 32) and thumbnails.dtype == np.uint8
    agreement = pixel_agreement(thumbnails, [(0, 1), (0, 2), (2, 0)])
    assert agreement.min() >= pixel_threshold(), agreement
    assert agreement[1] == pytest.approx(agreement[2], abs=1e-6)  # either image of a pair may be the cropped one


def test_two_distinct_photos_of_one_product_type_with_the_same_silhouette_are_not_confirmed():
    from src.auditing.pixel_match import grey_thumbnail, pixel_agreement

    photos = sorted((SAMPLE / "t-shirt_top").glob("*.png"))[:100]
    thumbnails = np.stack([grey_thumbnail(Image.open(p).convert("RGB")) for p in photos])
    plain = thumbnails.reshape(len(photos), -1).astype(np.float32)
    plain -= plain.mean(1, keepdims=True)
    plain /= np.linalg.norm(plain, axis=1, keepdims=True)
    correlation = plain @ plain.T
    np.fill_diagonal(correlation, -1)
    first, second = np.unravel_index(correlation.argmax(), correlation.shape)
    assert correlation[first, second] > 0.98  # the most alike two: their grey levels nearly agree
    assert pixel_agreement(thumbnails, [(first, second)])[0] < pixel_threshold()


def aligned_by_convolution(moving, fixed):
    """The definition of the pixel agreement written out plainly (zoom by grid sampling, the Laplacian of
    Gaussian by convolution, every shift's correlation by a grouped convolution): what the matrix form in
    src/auditing/pixel_match.py must equal."""
    import torch
    import torch.nn.functional as F

    from src.auditing import pixel_match as pm

    gaussian = torch.outer(pm.GAUSSIAN_TAPS, pm.GAUSSIAN_TAPS).view(1, 1, 5, 5)
    laplacian = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    log_filter = lambda t: F.conv2d(F.conv2d(t, gaussian, padding=2), laplacian, padding=1)[:, 0]  # noqa: E731
    pairs, zooms, inner = len(moving), len(pm.ZOOMS), pm.SIDE - 2 * pm.SHIFT
    details = log_filter(pm._zoomed(moving, pm.ZOOMS))[:, None]
    centre = log_filter(fixed)[:, pm.SHIFT:pm.SIDE - pm.SHIFT, pm.SHIFT:pm.SIDE - pm.SHIFT].reshape(pairs, -1)
    centre = centre - centre.mean(1, keepdim=True)
    centre = centre / centre.norm(dim=1, keepdim=True)
    kernels = centre.repeat_interleave(zooms, 0).view(pairs * zooms, 1, inner, inner)
    dots = F.conv2d(details.view(1, pairs * zooms, pm.SIDE, pm.SIDE), kernels, groups=pairs * zooms)[0]
    sums = F.avg_pool2d(details, inner, stride=1)[:, 0] * inner ** 2
    squares = F.avg_pool2d(details.square(), inner, stride=1)[:, 0] * inner ** 2
    spread = (squares - sums.square() / inner ** 2).clamp_min(1e-12).sqrt()
    return (dots / spread).view(pairs, -1).amax(1)


def test_the_pixel_agreement_is_the_best_correlation_over_zooms_and_shifts_either_way_round():
    import torch

    from src.auditing.pixel_match import grey_thumbnail, pixel_agreement

    photos = sorted((SAMPLE / "dress").glob("*.png"))[:40] + sorted((SAMPLE / "sandal").glob("*.png"))[:40]
    thumbnails = np.stack([grey_thumbnail(Image.open(p).convert("RGB")) for p in photos])
    rows = np.random.default_rng(0).integers(0, len(photos), (300, 2))
    pairs = [(int(a), int(b)) for a, b in rows if a != b]
    first = torch.from_numpy(thumbnails[[a for a, _ in pairs]].astype(np.float32) / 255)[:, None]
    second = torch.from_numpy(thumbnails[[b for _, b in pairs]].astype(np.float32) / 255)[:, None]
    expected = torch.maximum(aligned_by_convolution(second, first), aligned_by_convolution(first, second)).numpy()
    assert expected.max() - expected.min() > 0.5  # pairs from alike to unlike photos
    assert np.abs(pixel_agreement(thumbnails, pairs, chunk=64) - expected).max() < 1e-5


def test_a_cropped_copy_among_plain_trousers_is_confirmed_and_the_look_alike_trousers_are_not():
    """Distinct plain trousers shot the same way agree in their pixels nearly as well as a copy does; what
    tells them apart is that each has several such look-alikes, where a copy agrees with its original far
    better than with anything else (the ratio test)."""
    from src.auditing.duplicates import confirmed_pairs
    from src.auditing.pixel_match import grey_thumbnail, pixel_agreement, pixel_neighbours

    cfg = compose_config(["data.num_workers=0"], config_name="audit").duplicates
    photos = [Image.open(p).convert("RGB") for p in sorted((SAMPLE / "trouser").glob("*.png"))]
    original = photos[7]
    side = original.width
    photos.append(original.crop((2, 2, side - 2, side - 2)).resize((side, side), Image.Resampling.BICUBIC))
    thumbnails = np.stack([grey_thumbnail(photo) for photo in photos])
    copy = len(photos) - 1
    candidates = sorted(pixel_neighbours(thumbnails, cfg.candidates, block=256, device="cpu"))
    assert (7, copy) in candidates
    agreement = pixel_agreement(thumbnails, candidates)
    above = {pair for pair, a in zip(candidates, agreement) if a >= cfg.pixel_threshold}
    assert len(above - {(7, copy)}) >= 2  # distinct trousers the threshold alone would take for copies
    assert set(confirmed_pairs(candidates, agreement, cfg.pixel_threshold, cfg.distinct_ratio)) == {(7, copy)}


def test_label_issues_keep_confident_learnings_picks_whose_odds_against_the_given_label_are_high():
    """Out-of-fold probabilities of three classes, the first two alike (the head confuses them: 30 % of
    each is put in the other), the third apart: a photo of class 2 filed as 0 (odds 95:1 against its label)
    is an issue; photos of 0 and 1 the head half-confuses (odds 2:1) are picked by confident learning too,
    and set aside by the odds."""
    from src.auditing.label_issues import find_issues

    rng = np.random.default_rng(0)
    labels, rows = [], []
    for label in range(3):
        for n in range(60):
            p = np.full(3, 0.02)
            if label == 2:
                p[2] = 0.96
            else:
                alike = 1 - label
                p[label], p[alike] = (0.30, 0.66) if n < 18 else (0.66, 0.30)  # 30 % lean to the other class
            labels.append(label)
            rows.append(p + rng.uniform(0, 0.01, 3))
    labels.append(0)
    rows.append(np.array([0.01, 0.02, 0.95]))  # a photo of class 2 filed under 0
    labels = np.array(labels)
    probabilities = np.array(rows) / np.array(rows).sum(1, keepdims=True)

    every, none_aside = find_issues(labels, probabilities, min_odds=0)
    assert none_aside == 0 and len(every) > 1 and len(labels) - 1 in {x.index for x in every}
    kept, set_aside = find_issues(labels, probabilities, min_odds=20)
    assert [(x.index, x.given, x.suggested) for x in kept] == [(len(labels) - 1, 0, 2)]
    assert kept[0].odds == pytest.approx(95, rel=0.05)
    assert set_aside == len(every) - 1


def test_the_audit_writes_its_pictures_and_summary_for_tensorboard(audited):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, _, first, _ = audited
    log_dir = Path(first["output_dir"]) / "tensorboard"
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    images = set(events.Tags()["images"])
    assert {"audit/label_issues", "audit/duplicate_groups"} <= images
    for tag in images:
        (picture,) = events.Images(tag)
        pixels = np.array(Image.open(io.BytesIO(picture.encoded_image_string)).convert("L"), dtype=np.float32)
        assert pixels.shape[1] >= 200 and pixels.std() > 20  # photos drawn, not a blank card
    (text,) = events.Tensors("audit/summary/text_summary")
    summary = text.tensor_proto.string_val[0].decode()
    assert "body: resnet18" in summary and first["summary"][1] in summary
