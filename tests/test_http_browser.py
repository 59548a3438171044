"""A real browser (Debian's chromium, driven by selenium through the system chromedriver) against
the example web app (examples/web/) behind ``http-server``: it loads the page, whose script calls the
app's JSON API, and it loads the JSON API itself."""

from __future__ import annotations

import json
import shutil

import pytest

from cocaine.cli.manifest import load_manifest
from support import ROOT, free_port, wait_for

pytestmark = pytest.mark.timeout(120)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# What works on a headless CI machine; no network but loopback, no first-run or update traffic.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def site(module_daemon):
    manifest = load_manifest(str(ROOT / "examples" / "web" / "manifest.json"))
    port = free_port()
    manifest["tasks"]["web"]["endpoint"] = f"127.0.0.1:{port}"
    module_daemon.create("web-example", manifest)
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER), \
        "chromium and chromium-driver are needed (.ci/run installs them)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # with the driver's path below, Selenium Manager downloads nothing
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_the_browser_loads_the_page_and_its_script_calls_the_json_api(site, browser):
    browser.get(site + "/")
    assert browser.title == "cocaine web example"
    greeting = browser.find_element("id", "greeting")
    wait_for(lambda: greeting.text != "loading...", timeout=20, message="the page's script to call the API")
    assert greeting.text == "Hello, browser!"


def test_the_browser_loads_the_json_api(site, browser):
    browser.get(site + "/api/greeting?name=chromium")
    data = json.loads(browser.find_element("tag name", "body").text)
    assert data["greeting"] == "Hello, chromium!" and data["method"] == "GET"
    assert data["peer"].startswith("127.0.0.1:")
    # and the browser's own POST, from a script on the page
    browser.get(site + "/")
    reply = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch("/api/echo", {method: "POST", headers: {"Content-Type": "application/json"},
                            body: JSON.stringify({n: 42})})
            .then((r) => r.json().then((body) => done({status: r.status, body})))
            .catch((e) => done({error: String(e)}));
    """)
    assert reply == {"status": 200, "body": {"echo": {"n": 42}, "bytes": 8}}
    browser.get(site + "/missing")
    assert json.loads(browser.find_element("tag name", "body").text)["error"] == "no route for GET /missing"
