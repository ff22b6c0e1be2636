"""Headless Chromium through Selenium, for the browser tests and the documentation's
screenshots (`dashboards/screenshots.py`).

Needs Debian's ``chromium`` and ``chromium-driver`` (or any Chromium and a matching
chromedriver on the PATH) and ``pip install selenium`` (in the dev extra).
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from se_search.errors import SESearchError

__all__ = ["headless_chromium", "missing", "open_and_wait"]


def missing() -> str | None:
    """What is missing to run a headless Chromium, with the fix; None if nothing."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install selenium (or the dev extra)"
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return "Chromium or its driver is missing: apt-get install chromium chromium-driver"
    return None


def headless_chromium(*, width: int = 1280, height: int = 900) -> Any:
    """A Selenium driver of a headless Chromium that logs the console and the network."""
    reason = missing()
    if reason is not None:
        raise SESearchError(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium")
    assert chromium is not None  # missing() found it
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        f"--user-data-dir={tempfile.mkdtemp(prefix='se-search-chromium-')}",
        f"--window-size={width},{height}",
    ):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


def open_and_wait(driver: Any, url: str, ready_js: str, *, timeout: float = 60) -> None:
    """Load ``url`` with fresh logs and wait until the expression ``ready_js`` is true."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get("about:blank")
    driver.get_log("browser"), driver.get_log("performance")  # drop what came before
    driver.get(url)
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(f"return !!({ready_js})"))
