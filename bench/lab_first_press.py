"""The Poison lab's first press, timed in a real browser: a fresh server, the sidebar set to a data
set and feature space, the server's warm-up waited for, then "Craft poisons and retrain the victims"
pressed without changing anything, and the time until the verdict table is on screen and until the
charts under it are drawn.

    POISONLAB_DATA_DIR=DIR python bench/lab_first_press.py [--choices mnist/2-D,cifar10/2-D] [--repeats 2]

Needs Debian's chromium and Playwright (as tests/test_browser.py). Writes
``bench/results/lab_first_press.json``: per choice the seconds of each press (the first and later
presses of one page: the job queue, the judge and the features are warm after the first) and a
screenshot of the first. Run it on an idle machine
(it records the load average beside the numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
BUSY = "() => !document.querySelector('[data-testid=\"stStatusWidget\"]') && !document.querySelector('.stSpinner')"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settle(page) -> None:
    page.wait_for_selector("h1", timeout=180_000)
    for _ in range(2):
        page.wait_for_function(BUSY, timeout=300_000)
        page.wait_for_timeout(1000)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--choices", default="mnist/2-D,fashion-mnist/2-D,cifar10/2-D")
    p.add_argument("--repeats", type=int, default=2, help="presses per choice (each after a page reload)")
    p.add_argument("--warm-wait", type=float, default=60, help="seconds to let the server's warm-up finish")
    p.add_argument("--renice-browser", type=int, default=0,
                   help="nice the browser's processes to this (e.g. 19): does the browser, on the same 2 cores, "
                        "slow the server's crafts (which run at nice 10)?")
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    port, rows = _port(), []
    db = Path(tempfile.mkdtemp(prefix="poisonlab-press-")) / "rounds.sqlite"
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
                               "--server.port", str(port), "--server.address", "127.0.0.1"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "POISONLAB_ROUNDS_DB": str(db)})
    url = f"http://127.0.0.1:{port}"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            if args.renice_browser:
                subprocess.run(f"pgrep -f chrom | xargs -r renice -n {args.renice_browser} -p", shell=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(120):
                try:
                    page.goto(url)
                    break
                except Exception:  # the server is still starting
                    time.sleep(1)
            _settle(page)
            time.sleep(args.warm_wait)  # pages/warm.py fills the shared caches when the server starts
            for choice in args.choices.split(","):
                dataset, space = choice.split("/")
                for k in range(args.repeats):
                    page.goto(url)
                    _settle(page)
                    boxes = page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']")
                    boxes.nth(0).click()
                    page.get_by_role("option", name=NAMES[dataset], exact=True).click()
                    _settle(page)
                    page.locator("[data-testid='stSidebar']").get_by_text(space, exact=True).click()
                    _settle(page)
                    page.get_by_role("link", name="Poison lab").click()
                    _settle(page)
                    # the verdict table's first frame on screen, by the page's own clock: a requestAnimationFrame
                    # callback queued when the table enters the page runs just before that frame is painted
                    # (Playwright's own waits poll from the page too, so they are late when its thread is busy)
                    page.evaluate("""() => { window.__shown = 0; window.__t0 = performance.now();
                      new MutationObserver((_, obs) => {
                        const t = document.querySelector('[data-testid="stTable"]');
                        if (t && t.innerText.includes('poisoned?')) {
                          obs.disconnect(); requestAnimationFrame(() => { window.__shown = performance.now(); }); }
                      }).observe(document.body, {childList: true, subtree: true, characterData: true}); }""")
                    t0 = time.perf_counter()
                    page.get_by_role("button", name="Craft poisons and retrain the victims").click()
                    page.wait_for_function("window.__shown > 0", timeout=300_000, polling=100)
                    shown = page.evaluate("(window.__shown - window.__t0) / 1000")
                    charts = 4 if space == "2-D" else 2  # the open tab's: path and filter scores (2-D: regions)
                    page.wait_for_function(f"[...document.querySelectorAll('[role=tabpanel] .js-plotly-plot')].filter(p => "
                                           f"p.querySelector('.main-svg g.trace')).length >= {charts}",
                                           timeout=120_000, polling=100)
                    seconds = time.perf_counter() - t0
                    shot = ROOT / "bench" / "results" / f"lab_first_press_{dataset}_{space.replace('-', '').lower()}.png"
                    if k == 0:
                        page.wait_for_timeout(3000)
                        page.screenshot(path=str(shot), full_page=True)
                    rows.append({"dataset": dataset, "space": space, "press": k, "verdict_shown_s": round(shown, 2),
                                 "all_drawn_s": round(seconds, 2),
                                 "screenshot": str(shot.relative_to(ROOT)) if k == 0 else None})
                    print(json.dumps(rows[-1]), flush=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    out = {"rows": rows, "browser_nice": args.renice_browser, "load_at_end": os.getloadavg(),
           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "note": "seconds from the click, in Chromium on this machine: verdict_shown_s to the first frame with the "
                   "verdict table (page clock), all_drawn_s until the open tab's charts are drawn (before "
                   "the result had one tab per model, 'seconds': until the canvas verdict table existed)"}
    path = ROOT / "bench" / "results" / f"lab_first_press{'_browser_nice' if args.renice_browser else ''}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
