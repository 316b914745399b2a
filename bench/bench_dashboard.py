"""Dashboard speed: cold start to a usable first page, warm page switches, and one poison-lab run.

    python bench/bench_dashboard.py            # needs Debian's chromium and playwright

Cold start: from launching ``streamlit run app.py`` to the Overview's plots being drawn in Chromium.
Warm switch: clicking to another page until its title shows and Streamlit is idle.
Poison lab: the page's default run (5 MNIST poisons, 200 steps, both shipped d = 64 models, two
transfer victims each), the two models one after the other and in parallel (``core.lab.run_lab_pair``).
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


def lab_timings(repeats: int = 3) -> dict:
    """The Poison lab's default run (MNIST, 5 poisons, 200 steps, both d = 64 models): the two models one
    after the other (``run_lab`` twice, as before) and in parallel, one core each (``run_lab_pair``,
    what the page does now), both with the page's feature banks of the embedded sample (shipped, so only
    the poisons go through the networks). Interleaved repeats; medians."""
    import torch

    from core.attacks import settings_for
    from core.checkpoints import load_checkpoint
    from core.data import load_demo
    from core.judge import load_judge
    from core.lab import run_lab, run_lab_pair
    from core.embeddings import map_key, stored_features
    from core.pipeline import FeatureBank, correct_targets, plan_trial

    ds = load_demo("mnist")
    judge = load_judge(ds)
    paths = {h: ROOT / "checkpoints" / f"mnist_{h}_d64.pt" for h in ("softmax", "lgm")}
    models = {h: load_checkpoint(p)[0] for h, p in paths.items()}
    # the page's feature banks: the shipped demo features (``python -m core precompute-maps``)
    banks = {h: FeatureBank(*(stored_features(models[h], x, map_key(p), split)
                              for split, x in (("train", ds.x_train), ("test", ds.x_test))))
             for h, p in paths.items()}
    candidates = correct_targets(list(models.values()), ds)
    ti = int(np.intersect1d(np.flatnonzero(ds.y_test == 0), candidates)[0])  # the page's first target
    plan = plan_trial(ds, 0, candidates, n_poisons=5, n_clean=500, n_test=500, target_index=ti, base_class=1,
                      judge=judge)
    knobs = settings_for("fc", "mnist", iters=200, seed=0, record_every=5)
    runs = {h: (m, "fc", knobs) for h, m in models.items()}
    times: dict = {"sequential_s": [], "parallel_s": []}
    outcomes = {}
    for _ in range(repeats):
        t = time.perf_counter()
        seq = {h: run_lab(m, ds, plan, "fc", knobs, judge=judge, bank=banks[h]) for h, m in models.items()}
        times["sequential_s"].append(time.perf_counter() - t)
        t = time.perf_counter()
        par = run_lab_pair(runs, ds, plan, judge=judge, banks=banks)
        times["parallel_s"].append(time.perf_counter() - t)
        outcomes = {h: (seq[h].victims["none"].outcome.pred_after, par[h].victims["none"].outcome.pred_after)
                    for h in models}
    return {"setting": "MNIST d=64 pair, 5 poisons, 200 steps, both victims each", "repeats": repeats,
            "torch_threads": torch.get_num_threads(),
            **{k: round(float(np.median(v)), 2) for k, v in times.items()},
            "same_predictions_sequential_vs_parallel": all(a == b for a, b in outcomes.values())}


if __name__ == "__main__":
    import argparse
    import os

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lab-only", action="store_true", help="skip the browser timings")
    args = ap.parse_args()
    out = {"load_before": os.getloadavg()[0], "lab": lab_timings()}
    if not args.lab_only:
        out["browser"] = browser_timings()
    print(json.dumps(out, indent=2))
