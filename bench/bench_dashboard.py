"""Dashboard speed: cold start to a usable first page, warm page switches, and one poison-lab run.

    python bench/bench_dashboard.py            # needs Debian's chromium and playwright

Cold start: from launching ``streamlit run app.py`` to the Overview's plots being drawn in Chromium.
Warm switch: clicking to another page until its title shows and Streamlit is idle.
Poison lab: ``core.lab.run_lab`` for one MNIST poison against both shipped high-d models, craft plus
two transfer retrainings each (what the page's button does), at 200 and 1000 iterations.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def browser_timings() -> dict:
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless",
                             "true", "--server.port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    out: dict = {}
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox", "--disable-gpu",
                                  "--disable-background-networking", "--disable-component-update", "--no-first-run"])
            page = b.new_page(viewport={"width": 1400, "height": 1200})
            while True:
                try:
                    page.goto(f"http://127.0.0.1:{port}/")
                    break
                except Exception:  # noqa: BLE001 - server not listening yet
                    time.sleep(0.2)
            page.wait_for_selector(".js-plotly-plot", timeout=300_000)
            out["cold_start_to_overview_plot_s"] = round(time.perf_counter() - t0, 2)
            idle = "!document.querySelector('[data-testid=\"stStatusWidget\"]')"
            page.wait_for_function(idle, timeout=300_000)
            out["cold_start_to_overview_complete_s"] = round(time.perf_counter() - t0, 2)
            for name in ("Feature space", "Poison lab", "Attack outcomes", "Defences", "Overview", "Feature space"):
                t = time.perf_counter()
                page.get_by_role("link", name=name).click()
                page.wait_for_selector(f"h1:has-text('{name if name != 'Overview' else 'Poison Lab'}')", timeout=300_000)
                page.wait_for_function(idle, timeout=300_000)
                out.setdefault("page_switch_s", []).append({name: round(time.perf_counter() - t, 2)})
            b.close()
    finally:
        proc.terminate()
    return out


def lab_timings() -> dict:
    from core.checkpoints import load_checkpoint
    from core.data import load_demo
    from core.lab import run_lab

    ds = load_demo("mnist")
    ti = int(np.flatnonzero(ds.y_test == 3)[0])
    res = {}
    for iters in (200, 1000):
        t = time.perf_counter()
        for head in ("softmax", "lgm"):
            model, _ = load_checkpoint(ROOT / "checkpoints" / f"mnist_{head}_d64.pt")
            run_lab(model, ds, ds.x_test[ti:ti + 1], 3, 8, "fc", {"iters": iters, "opacity": 0.3}, n_poisons=1)
        res[f"one_poison_both_models_{iters}_iters_s"] = round(time.perf_counter() - t, 2)
    return res


if __name__ == "__main__":
    print(json.dumps({"lab": lab_timings(), "browser": browser_timings()}, indent=2))
