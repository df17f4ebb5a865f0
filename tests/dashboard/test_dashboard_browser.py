"""``shardnet dashboard`` in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by selenium) against a real 2 x 4 testnet of local
processes while ``shardnet load`` runs: the page loads, shows both shards, its heights
rise without a reload, a cross-shard transaction clicked in the latest blocks shows its
hops on both shards, and a killed node is shown unreachable. The screenshot it takes is
the README's (``SHARDNET_UPDATE_SCREENSHOTS=1`` writes it to docs/img/dashboard.png)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.node import local_testnet

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SHARDNET = str(Path(sys.executable).parent / "shardnet")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
README_SHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "dashboard.png"
UPDATE_SHOT = os.environ.get("SHARDNET_UPDATE_SCREENSHOTS") == "1"
WAIT_S = 120  # a loaded 2-core machine: the testnet, the load, the browser


def _skip_without_chromium() -> None:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium is not installed (Debian packages `chromium` and "
                    "`chromium-driver`, as .ci/run installs them): no browser to drive")


@contextmanager
def _browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1480,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def _dashboard(root: Path) -> Iterator[str]:
    """``shardnet dashboard`` on a free port; its URL; stopped with SIGINT (exit 0)."""
    process = subprocess.Popen([SHARDNET, "dashboard", "--testnet", str(root), "--port", "0",
                                "--interval", "1s"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        try:
            first = lines.get(timeout=WAIT_S)
        except queue.Empty:
            raise AssertionError("the dashboard printed no URL") from None
        assert first.startswith("dashboard: http://127.0.0.1:"), (
            first, process.stderr.read() if process.poll() is not None and process.stderr
            else "")
        yield first.split()[1]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _heights(driver: object) -> dict[str, int | None]:
    raw = driver.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.querySelectorAll('.shard'))"
        ".map(e => [e.id, e.dataset.height]);")
    return {name: int(h) if h else None for name, h in raw}


def _wait(driver: object, condition: object, what: str) -> object:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.25).until(  # type: ignore[arg-type]
        condition, message=f"timed out after {WAIT_S} s waiting for {what}")


def test_the_page_shows_both_shards_and_follows_them_while_load_runs(tmp_path: Path) -> None:
    _skip_without_chromium()
    with local_testnet(tmp_path, shards=2, start_shards=(0, 1)) as net:
        once = subprocess.run([SHARDNET, "dashboard", "--testnet", str(net.root), "--once",
                               "--json"], capture_output=True, text=True, timeout=WAIT_S)
        assert once.returncode == 0, once.stderr
        snapshot = json.loads(once.stdout)
        assert [s["shard"] for s in snapshot["shards"]] == [0, 1]
        assert snapshot["nodes_up"] == snapshot["nodes_total"] == 8

        load = None
        with _dashboard(net.root) as url, _browser() as driver:
            try:
                driver.get(url)  # type: ignore[attr-defined]
                _wait(driver, lambda d: all(h is not None for h in _heights(d).values())
                      and len(_heights(d)) == 2, "both shards on the page")
                before = _heights(driver)
                assert set(before) == {"shard-0", "shard-1"}
                tick = int(driver.execute_script(  # type: ignore[attr-defined]
                    "return document.body.dataset.tick"))
                load = subprocess.Popen(
                    [SHARDNET, "load", "--testnet", str(net.root), "--rate", "150",
                     "--duration", "20s", "--cross-shard", "0.3", "--mix",
                     "transfer=70,swap=30", "--senders", "32", "--quiet", "--no-audit"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

                def risen(d: object) -> bool:
                    now = _heights(d)
                    return all((now[s] or 0) >= (before[s] or 0) + 3 for s in before)

                _wait(driver, risen, "both shards' heights to rise on the page")
                assert load.poll() is None, "the load ended before the page saw it"
                after_tick = int(driver.execute_script(  # type: ignore[attr-defined]
                    "return document.body.dataset.tick"))
                assert after_tick > tick  # the same page, updated live: no reload

                # Everything the page loaded came from the dashboard itself.
                loaded = driver.execute_script(  # type: ignore[attr-defined]
                    "return performance.getEntriesByType('resource').map(e => e.name);")
                assert loaded and all(u.startswith(url) for u in loaded), loaded

                rows = driver.execute_script(  # type: ignore[attr-defined]
                    "return Array.from(document.querySelectorAll('#nodes tbody tr'))"
                    ".map(r => r.cells[1].textContent);")
                assert len(rows) == 8 and all(r.startswith("up") for r in rows), rows
                _wait(driver, lambda d: d.execute_script(
                    "return document.querySelectorAll('#charts svg').length") == 6,
                    "the six charts")

                # A transaction of one shard whose receipt a block of the other applied.
                _wait(driver, lambda d: d.execute_script(
                    "return document.querySelector('button.origin') !== null"),
                    "a block that applied a receipt")
                driver.execute_script(  # type: ignore[attr-defined]
                    "document.querySelector('button.origin').click();")
                _wait(driver, lambda d: d.execute_script(
                    "return document.querySelectorAll('#hops tr.hop').length") >= 2,
                    "the clicked transaction's hops")
                hop_shards = driver.execute_script(  # type: ignore[attr-defined]
                    "return Array.from(document.querySelectorAll('#hops tr.hop'))"
                    ".map(r => r.cells[1].textContent);")
                assert set(hop_shards) == {"0", "1"}, hop_shards
                status = driver.execute_script(  # type: ignore[attr-defined]
                    "return document.getElementById('tx-status').dataset.status;")
                assert status in ("committed", "finalized")

                # The whole page in one picture; for the README's, some history first.
                more = 20 if UPDATE_SHOT else 2
                _wait(driver, lambda d: int(d.execute_script(
                    "return document.body.dataset.tick")) >= after_tick + more,
                    f"{more} more snapshots")
                height = driver.execute_script(  # type: ignore[attr-defined]
                    "return document.documentElement.scrollHeight + window.outerHeight"
                    " - window.innerHeight;")
                driver.set_window_size(1480, int(height) + 20)  # type: ignore[attr-defined]
                shot = tmp_path / "dashboard.png"
                assert driver.save_screenshot(str(shot))  # type: ignore[attr-defined]
                assert shot.stat().st_size > 50_000  # a blank page is a few KB
                if UPDATE_SHOT:
                    README_SHOT.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(shot, README_SHOT)

                net.kill("shard1-node3")
                _wait(driver, lambda d: "unreachable" in d.execute_script(
                    "return document.getElementById('node-shard1-node3').textContent;"),
                    "the killed node shown unreachable")
                assert driver.execute_script(  # type: ignore[attr-defined]
                    "return document.getElementById('shard-1').querySelector('h3')"
                    ".textContent;").endswith("(3/4 nodes up)")
            finally:
                if load is not None:
                    try:
                        _, err = load.communicate(timeout=WAIT_S)
                    finally:
                        if load.poll() is None:
                            load.kill()
                            load.wait()
        assert load is not None and load.returncode == 0, err[-2000:]
