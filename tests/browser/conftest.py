"""Headless Chromium for the dashboard's browser tests (selenium + Debian's chromium-driver).

When Chromium, chromedriver or selenium is missing the tests skip with a loud reason, except
under CI (the ``CI`` environment variable set): there a missing browser fails the run, so the
suite CI runs never passes without having driven a real browser (`.ci/run` installs them).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--window-size=1280,1000")


def browser_problem() -> str | None:
    """Why the browser tests cannot run here, or None."""
    missing = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -r requirements.txt)")
    if not any(shutil.which(name) for name in CHROMIUM_NAMES):
        missing.append("chromium (apt-get install chromium)")
    if shutil.which("chromedriver") is None:
        missing.append("chromedriver (apt-get install chromium-driver)")
    return "; ".join(missing) or None


def require_browser() -> None:
    problem = browser_problem()
    if problem is None:
        return
    message = f"BROWSER TESTS NOT RUN: missing {problem}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: the browser tests must run)")
    pytest.skip(message)


@pytest.fixture
def chrome(tmp_path: Path) -> Iterator[Any]:
    """A fresh headless Chromium with its own profile under tmp_path."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = next(shutil.which(name) for name in CHROMIUM_NAMES if shutil.which(name))
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=shutil.which("chromedriver")))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return folder
