"""The page of `python -m src.serve` in a real headless Chromium (Debian's, driven by Selenium)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import headless_chromium, require_extra, require_programs
from tests.test_serve import (CLASSES, first_conv_as_served, photos, predictor_probabilities,  # noqa: F401 (fixtures)
                              running_server, trained)

require_extra("litserve", "serve")
webdriver = require_extra("selenium.webdriver", "dev")
CHROMIUM, CHROMEDRIVER = require_programs("chromium", "chromedriver")

DESKTOP, PHONE = (1280, 900), (390, 844)  # CSS pixels: a laptop window and an iPhone 12-14's


@pytest.fixture
def browser(tmp_path):
    driver = headless_chromium(tmp_path / "chromium-profile")
    driver.set_window_size(*DESKTOP)
    yield driver
    driver.quit()


def wait_for(condition, timeout: float = 60.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def save(browser, tmp_path: Path, name: str) -> None:
    """A screenshot in tmp_path, and in $SCREENSHOT_DIR (docs/images for the README) when it is set."""
    browser.save_screenshot(str(tmp_path / name))
    if os.environ.get("SCREENSHOT_DIR"):
        shutil.copy(tmp_path / name, Path(os.environ["SCREENSHOT_DIR"]) / name)


@pytest.fixture(scope="module")
def page_server(trained, module_tmp_path):  # noqa: F811
    """One server with the default settings for every page test."""
    with running_server(trained, module_tmp_path / "page-server") as started:
        yield started


def test_upload_a_photo_see_the_label_bars_and_the_grad_cam_overlay(browser, page_server, trained, photos, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By

    find = lambda css: browser.find_element(By.CSS_SELECTOR, css)  # noqa: E731
    client, _ = page_server
    classes = client.get_json("/info")["model"]["classes"]
    browser.get(f"http://127.0.0.1:{client.port}/")
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#classes li")) == CLASSES, what="the class list")
    assert [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#classes li")] == classes

    photo = photos[2]
    expected = predictor_probabilities(trained, [photo])[0]
    find("#file").send_keys(str(photo))
    wait_for(lambda: find("#label").text not in ("–", "…"), what="the predicted label")
    assert find("#label").text == classes[int(expected.argmax())]
    assert find("#error").get_attribute("hidden") is not None
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars li")
    assert [b.find_element(By.CSS_SELECTOR, ".name").text for b in bars] == [classes[i] for i in expected.argsort(descending=True)]
    widths = [b.find_element(By.CSS_SELECTOR, ".bar").size["width"] for b in bars]
    assert widths == sorted(widths, reverse=True) and widths[0] > 0
    assert find("#preview").get_attribute("naturalWidth") == "28"  # the photo itself, shown

    cam = find("#cam")
    assert not cam.is_displayed()
    find("#cam-toggle").click()
    wait_for(cam.is_displayed, what="the Grad-CAM overlay")
    assert cam.get_attribute("src").startswith("data:image/png;base64,") and cam.get_attribute("naturalWidth") == "32"
    save(browser, tmp_path, "serve-page.png")

    # a phone-width window: one column, nothing wider than the screen
    browser.set_window_size(*PHONE)
    wait_for(lambda: browser.execute_script("return window.innerWidth") < 500, what="the narrow window")
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    preview, output = find("#input").rect, find("#output").rect
    assert output["y"] >= preview["y"] + preview["height"]  # stacked, not side by side
    save(browser, tmp_path, "serve-page-phone.png")

    find("#cam-toggle").click()
    wait_for(lambda: not cam.is_displayed(), what="the overlay to hide")
    # a file that is not an image: the server's message on the page
    not_image = tmp_path / "notes.png"
    not_image.write_text("not a picture")
    find("#file").send_keys(str(not_image))
    wait_for(lambda: find("#error").is_displayed(), what="the error message")
    assert find("#error").text.startswith("415:") and "is not an image" in find("#error").text


def _expected_conv(trained, photo, kernel: int, row: int, col: int, precision: str) -> tuple[float, float]:  # noqa: F811
    """The first layer's output at (row, col) of ``kernel`` for ``photo``, by F.conv2d on the checkpoint: as the
    page multiplies and adds (float32) and as the served model computes it (at ``precision``)."""
    from PIL import Image

    from src.models.loading import load_classifier

    loaded = load_classifier(trained)
    image = loaded.transform(Image.open(photo).convert("RGB"))
    weight = loaded.net.backbone[0].weight
    return (float(first_conv_as_served(image, weight, "32-true")[kernel, row, col]),
            float(first_conv_as_served(image, weight, precision)[kernel, row, col]))


def test_the_inside_view_walks_the_photo_from_pixels_to_class_scores(browser, page_server, trained, photos, tmp_path):  # noqa: F811
    import torch
    import torch.nn.functional as F
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    find = lambda css: browser.find_element(By.CSS_SELECTOR, css)  # noqa: E731
    client, _ = page_server
    browser.get(f"http://127.0.0.1:{client.port}/")
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#classes li")) == CLASSES, what="the class list")
    photo = photos[1]
    find("#file").send_keys(str(photo))
    wait_for(lambda: find("#label").text not in ("–", "…"), what="the predicted label")
    find("#inside-open").click()
    wait_for(lambda: find("#inside-body").is_displayed() and find("#mac-total").text, what="the inside view")
    assert not find("#inside-error").is_displayed()

    def shown() -> tuple[float, float]:
        return float(find("#mac-total").text), float(find("#mac-model").text)

    # the default kernel at the centre: the page's multiply-and-add and the model's map, both F.conv2d's
    kernel = int(Select(find("#kernel")).first_selected_option.get_attribute("value"))
    row, col = int(find("#pos-row").get_attribute("value")), int(find("#pos-col").get_attribute("value"))
    assert (row, col) == (8, 8)  # the centre of conv1's 16 x 16 output at 32 px
    precision = client.get_json("/info")["model"]["precision"]
    expected = _expected_conv(trained, photo, kernel, row, col, precision)
    assert shown() == tuple(pytest.approx(value, abs=1e-4) for value in expected)
    # the page says whether its float64 sum and the model's number agree (bf16 serving rounds the model's)
    agree = abs(expected[0] - expected[1]) <= 1e-3 * max(1.0, abs(expected[1]))
    assert find("#mac-check").text.startswith("✓") if agree else \
        f"the model runs at {precision}, this sum in float64" in find("#mac-check").text
    browser.execute_script("document.querySelector('#part-kernel').scrollIntoView()")
    save(browser, tmp_path, "inside-kernel.png")

    # another position: typed in, the number follows
    for field, value in (("#pos-row", "0"), ("#pos-col", "13")):
        find(field).clear()
        find(field).send_keys(value)
    wait_for(lambda: "rows -3" in find("#field-caption").text, what="the field to move to row 0")
    moved = _expected_conv(trained, photo, kernel, 0, 13, precision)
    assert moved[0] != pytest.approx(expected[0], abs=1e-4)
    assert shown() == tuple(pytest.approx(value, abs=1e-4) for value in moved)

    # another kernel: asked of the server, the position kept
    other = (kernel + 1) % 64
    Select(find("#kernel")).select_by_value(str(other))
    wait_for(lambda: f"kernel {other}:" in find("#weights-caption").text, what="the new kernel")
    again = _expected_conv(trained, photo, other, 0, 13, precision)
    assert shown() == tuple(pytest.approx(value, abs=1e-4) for value in again)

    # the page's arithmetic on a hand-set kernel and a hand-made image: F.conv2d's numbers
    pixels = torch.arange(3 * 9 * 11, dtype=torch.uint8).view(3, 9, 11) * 2
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    weights = torch.zeros(3, 7, 7)
    weights[1] = 1.0
    weights[2, 3, 3] = -2.0
    page = browser.execute_script("""
        const m = window.insideMath;
        const input = m.normalise(Uint8Array.from(arguments[0]), [3, 9, 11], arguments[1], arguments[2]);
        return {input: Array.from(input), values: arguments[4].map(([r, c]) =>
            m.multiplyAdd(input, [3, 9, 11], arguments[3], [3, 7, 7], [2, 2], [3, 3], r, c).total)};""",
        pixels.flatten().tolist(), mean, std, weights.flatten().tolist(), [[0, 0], [2, 3], [4, 5]])
    normalised = (pixels.float().mul(1 / 255) - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert torch.equal(torch.tensor(page["input"]).view(3, 9, 11), normalised)  # float32 as torch computes it
    conv = F.conv2d(normalised.unsqueeze(0), weights.unsqueeze(0), stride=2, padding=3)[0, 0]
    assert page["values"] == [pytest.approx(float(conv[r, c]), abs=1e-5) for r, c in ((0, 0), (2, 3), (4, 5))]

    # stage by stage: the shape shown is the stage's
    stages = {b.text: b for b in browser.find_elements(By.CSS_SELECTOR, "#stage-tabs button")}
    assert list(stages) == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert find("#stage-shape").text == "stem: 64 × 8 × 8"
    stages["layer2"].click()
    wait_for(lambda: find("#stage-shape").text == "layer2: 128 × 4 × 4", what="layer2")
    assert stages["layer2"].get_attribute("aria-selected") == "true"
    assert "⌊(8 + 2·1 − 3) / 2⌋ + 1 = 4" in find("#stage-steps").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#stage-maps img")) == 7  # the mean and the top 6
    # pooling and the head: a 1024-vector; each top class's contributions plus bias make its score
    assert "1024 numbers" in find("#pool-text").text
    sums = browser.find_elements(By.CSS_SELECTOR, ".class-sum")
    assert len(sums) == 3 and all("= score" in s.text for s in sums)
    browser.execute_script("document.querySelector('#part-stages').scrollIntoView()")
    save(browser, tmp_path, "inside-stages.png")

    # a phone: one column, nothing wider than the screen
    browser.set_window_size(*PHONE)
    wait_for(lambda: browser.execute_script("return window.innerWidth") < 500, what="the narrow window")
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    browser.execute_script("document.querySelector('#part-kernel').scrollIntoView()")
    save(browser, tmp_path, "inside-phone.png")

    # a bad file while the view is open: the server's message in the view
    not_image = tmp_path / "notes.png"
    not_image.write_text("not a picture")
    find("#file").send_keys(str(not_image))
    wait_for(lambda: find("#inside-error").is_displayed(), what="the inside view's error")
    assert find("#inside-error").text.startswith("415:") and "is not an image" in find("#inside-error").text
