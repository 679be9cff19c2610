"""The page of `python -m src.serve` in a real headless Chromium (Debian's, driven by Selenium)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import headless_chromium
from tests.test_serve import CLASSES, photos, predictor_probabilities, running_server, trained  # noqa: F401 (fixtures)

pytest.importorskip("litserve", reason="the serve extra: pip install -e '.[serve]'")
webdriver = pytest.importorskip("selenium.webdriver", reason="the serve extra: pip install -e '.[serve]'")
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")

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


def test_upload_a_photo_see_the_label_bars_and_the_grad_cam_overlay(browser, trained, photos, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By

    find = lambda css: browser.find_element(By.CSS_SELECTOR, css)  # noqa: E731
    with running_server(trained, tmp_path) as (client, _):
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
