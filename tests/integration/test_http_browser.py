"""The search page in a real browser: headless Chromium (Debian's chromium
and chromium-driver, python3-selenium) against availd-http and the
constellation with the loopback fake registry."""
import os
import shutil
import tempfile

import pytest

from harness import FakeRegistry, wait_until
from test_http import get_json, http_cluster

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def registry():
    reg = FakeRegistry()
    yield reg
    reg.close()


@pytest.fixture
def browser():
    if not os.path.exists(CHROMEDRIVER):
        pytest.fail("chromium-driver is not installed: tools/dev deps installs it")
    profile = tempfile.mkdtemp(prefix="av-chrome-")
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-sync"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def rows(driver):
    """{domain: (class, verdict text, source)} of the result list."""
    out = {}
    for li in driver.find_elements(By.CSS_SELECTOR, "#results li"):
        out[li.get_attribute("data-domain")] = (li.get_attribute("class"),
                                                li.find_element(By.CSS_SELECTOR, ".verdict").text,
                                                li.get_attribute("data-source"))
    return out


def search(driver, c, text):
    box = driver.find_element(By.ID, "q")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.CSS_SELECTOR, "#search button").click()


def test_names_typed_are_checked_across_the_tlds(make_cluster, registry, browser):
    c = http_cluster(make_cluster, registry, tlds=["test", "de"])
    browser.get(f"http://127.0.0.1:{c.http_port}/")
    wait_until(lambda: browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1",
               timeout=20, what="the page's TLDs")
    search(browser, c, "free-page")
    wait_until(lambda: {k: v[0] for k, v in rows(browser).items()} ==
               {"free-page.test": "available", "free-page.de": "available"}, timeout=30, what="both answers")
    assert browser.find_element(By.ID, "note").text == "done"
    # A registered one, and an unknown one with its reason shown.
    search(browser, c, "garbage-page")
    wait_until(lambda: all(v[0] == "unknown" for v in rows(browser).values()) and len(rows(browser)) == 2,
               timeout=30, what="unknown answers")
    assert all("(unparseable)" in v[1] for v in rows(browser).values()), rows(browser)
    search(browser, c, "taken-page.test")
    wait_until(lambda: rows(browser).get("taken-page.test", ("",))[0] == "registered", timeout=30,
               what="a full name checked alone")


def test_a_slow_registry_shows_the_cached_answers_first(make_cluster, registry, browser):
    c = http_cluster(make_cluster, registry, tlds=["test", "de"])
    # slow-* names take the fake registry 2 s: have one of them cached.
    assert get_json(c, "/v1/status?domain=slow-page.test")[1]["status"][0]["availability"] == "available"
    wait_until(lambda: get_json(c, "/v1/status?domain=slow-page.test")[1]["status"][0]["source"] == "cache",
               timeout=20, what="the cached answer")
    browser.get(f"http://127.0.0.1:{c.http_port}/")
    wait_until(lambda: browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1",
               timeout=20, what="the page's TLDs")
    search(browser, c, "slow-page")
    # The cached one is shown while the other still waits for its registry.
    seen = wait_until(lambda: (lambda r: r if r.get("slow-page.test", ("",))[0] == "available" else None)(
        rows(browser)), timeout=20, what="the cached answer on the page")
    assert seen["slow-page.test"][2] == "cache"
    assert seen["slow-page.de"][0] == "pending", seen
    wait_until(lambda: rows(browser).get("slow-page.de", ("",))[0] == "available", timeout=30,
               what="the slow answer")
    assert rows(browser)["slow-page.de"][2] == "whois"
