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
    from core.attacks import attack_knobs
    from core.checkpoints import load_checkpoint
    from core.data import load_demo
    from core.judge import load_judge
    from core.lab import run_lab
    from core.pipeline import correct_targets, plan_trial

    ds = load_demo("mnist")
    judge = load_judge(ds)
    models = {h: load_checkpoint(ROOT / "checkpoints" / f"mnist_{h}_d64.pt")[0] for h in ("softmax", "lgm")}
    candidates = correct_targets(list(models.values()), ds)
    ti = int(np.intersect1d(np.flatnonzero(ds.y_test == 3), candidates)[0])
    plan = plan_trial(ds, 0, candidates, n_poisons=1, n_clean=500, n_test=500, target_index=ti, base_class=8,
                      judge=judge)
    res = {}
    for iters in (200, 1000):
        t = time.perf_counter()
        for model in models.values():
            run_lab(model, ds, plan, "fc", attack_knobs("fc", "mnist", iters), judge=judge)
        res[f"one_poison_both_models_{iters}_iters_s"] = round(time.perf_counter() - t, 2)
    return res


if __name__ == "__main__":
    print(json.dumps({"lab": lab_timings(), "browser": browser_timings()}, indent=2))
