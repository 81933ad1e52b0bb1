"""The playground as a user meets it: Debian's Chromium, headless, driven through Selenium and
its ChromeDriver (nothing downloads a browser). It opens the page served by `inkfuse play`,
submits a prompt, waits for the streamed previews and the final image, reads the image's pixels
back, then submits a prompt with words the model never saw and reads the one-line error.

Skipped, with the reason, where Chromium, ChromeDriver or Selenium is missing; `make
test-browser` installs them (Debian's chromium and chromium-driver packages) and runs it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip("Debian's chromium and chromium-driver are not installed "
                "(make test-browser installs them)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                "(pip install -e '.[browser]')")
pytest.importorskip("fastapi", reason="the play extra is not installed: pip install -e '.[play]'")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

RUNS = Path(__file__).resolve().parents[1] / "fixtures" / "old-runs"
# what the environment reference's probe found necessary as root on a closed network
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,900")


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "inkfuse.cli", "play", str(RUNS / "text"),
                             str(RUNS / "class"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        found = re.search(r"http://\S+", line)
        assert found, f"no address printed: {line!r} {proc.stderr.read() if not line else ''}"
        yield found.group(0)
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def wait_for_state(driver: object, states: tuple[str, ...], timeout: float = 120) -> str:
    body = driver.find_element(By.TAG_NAME, "body")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = body.get_attribute("data-state")
        if state in states:
            return state
        time.sleep(0.05)
    raise AssertionError(f"the page stayed {body.get_attribute('data-state')!r}")


# the final image's size and the spread of its pixel values, read back through a canvas
READ_PIXELS = """
const img = document.querySelector('.panel .result');
const c = document.createElement('canvas');
c.width = img.naturalWidth; c.height = img.naturalHeight;
const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
const d = ctx.getImageData(0, 0, c.width, c.height).data;
let lo = 255, hi = 0;
for (let i = 0; i < d.length; i += 4) { for (let k = 0; k < 3; k++) {
  lo = Math.min(lo, d[i + k]); hi = Math.max(hi, d[i + k]); } }
return [img.naturalWidth, img.naturalHeight, lo, hi];
"""


CANCEL_AT_FIRST_PREVIEW = """
const done = arguments[arguments.length - 1];
const poll = () => {
  if (document.body.dataset.previews) { document.getElementById('cancel').click(); done(true); }
  else if (document.body.dataset.state !== 'running') done(false);
  else setTimeout(poll, 1);
};
poll();
"""


def test_a_prompt_streams_previews_then_an_image_and_a_bad_prompt_gets_one_line(address,
                                                                              browser):
    browser.get(address)
    wait_for_state(browser, ("ready",), 60)
    assert Select(browser.find_element(By.ID, "run")).first_selected_option.text == "text"
    Select(browser.find_element(By.ID, "n")).select_by_visible_text("1")
    steps = browser.find_element(By.ID, "steps")
    steps.clear()
    steps.send_keys("25")
    prompt = browser.find_element(By.ID, "prompt")
    prompt.clear()
    prompt.send_keys("a red circle")
    browser.find_element(By.ID, "generate").click()
    assert wait_for_state(browser, ("done", "error")) == "done", \
        browser.find_element(By.ID, "error").text
    body = browser.find_element(By.TAG_NAME, "body")
    assert int(body.get_attribute("data-previews")) >= 1  # streamed, before the image
    assert body.get_attribute("data-first-preview-ms")
    assert browser.find_element(By.CSS_SELECTOR, ".panel .xt").get_attribute("src").startswith(
        "data:image/png")
    width, height, lo, hi = browser.execute_script(READ_PIXELS)
    assert (width, height) == (16, 16)  # the model's size
    assert hi - lo > 32, "the image is blank"

    prompt.clear()
    prompt.send_keys("a purple circle")
    browser.find_element(By.ID, "generate").click()
    assert wait_for_state(browser, ("done", "error")) == "error"
    error = browser.find_element(By.ID, "error").text
    assert "purple" in error and "never saw" in error and "\n" not in error

    # a long generation (64 images), cancelled from the page as soon as its first preview shows
    prompt.clear()
    prompt.send_keys("a blue square")
    steps.clear()
    steps.send_keys("50")
    Select(browser.find_element(By.ID, "n")).select_by_visible_text("64")
    browser.find_element(By.ID, "generate").click()
    assert browser.execute_async_script(CANCEL_AT_FIRST_PREVIEW)
    assert wait_for_state(browser, ("cancelled", "done", "error"), 30) == "cancelled"

    # and the server still serves: the other run, a class this time
    Select(browser.find_element(By.ID, "run")).select_by_visible_text("class")
    browser.find_element(By.ID, "generate").click()
    assert wait_for_state(browser, ("done", "error")) == "done"
    assert browser.find_element(By.ID, "error").text == ""
