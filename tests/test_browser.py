"""A real browser (Debian's Chromium through Playwright) opens every page and runs the poison-lab flow.

Fails on any Streamlit exception or error box, a wrong page title, or a page whose charts are not
drawn; saves screenshots under ``$POISONLAB_SCREENSHOTS`` (default: a temporary folder). Skipped where
Chromium or Playwright is missing (``.ci/run`` installs both).
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium")
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
pytestmark = [pytestmark, pytest.mark.slow]  # a real server and browser per test
PAGES = {"overview": "Overview", "tour": "Guided tour", "feature_space": "Feature space", "poison_lab": "Poison lab",
         "gallery": "Poison gallery", "outcomes": "Attack outcomes", "defences": "Defences",
         "red_team": "Red-team round", "teacher": "Teacher"}
# what each page shows first for the default choices (MNIST, 2-D features): its charts, and words it must say
FIRST_VIEW = {"overview": (2, "crafted now against each model"), "tour": (0, "Switch the sidebar to"),
              "red_team": (0, "Red-team round"), "teacher": (0, "Teacher's passphrase"),
              "feature_space": (2, "test accuracy"), "poison_lab": (0, "Until you craft: a shipped example"),
              "gallery": (2, "trials match"), "outcomes": (2, "crafting iterations"),
              "defences": (1, "Shipped experiment")}
PASSPHRASE = "browser test"
ERRORS = "[data-testid='stException'], [data-testid='stAlertContentError']"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    rounds = Path(tempfile.mkdtemp(prefix="poisonlab-browser-rounds-")) / "rounds.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless",
                             "true", "--server.port", str(port), "--server.address", "127.0.0.1"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "POISONLAB_TEACHER_PASSPHRASE": PASSPHRASE,
                                 "POISONLAB_ROUNDS_DB": str(rounds)})
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        yield b
        b.close()


def _shots() -> Path:
    folder = Path(os.environ.get("POISONLAB_SCREENSHOTS", "/tmp/poisonlab-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


BUSY = ("document.querySelector('[data-testid=\"stApp\"]')?.getAttribute('data-test-script-state') === "
        "'notRunning' && !document.querySelector('[data-testid=\"stStatusWidget\"]') && "
        "!document.querySelector('[data-testid=\"stSpinner\"]')")


def _settle(page) -> None:
    """Wait until Streamlit is idle (no running status, no spinner) twice in a row, then check errors."""
    page.wait_for_selector("h1", timeout=120_000)
    for _ in range(2):
        page.wait_for_function(BUSY, timeout=300_000)
        page.wait_for_timeout(1500)
    assert page.locator(ERRORS).count() == 0, page.locator(ERRORS).first.inner_text()


def _charts_drawn(page, at_least: int) -> None:
    """At least ``at_least`` Plotly charts on the page, each with its plot drawn (an SVG trace or WebGL points)."""
    if at_least == 0:
        return
    page.wait_for_selector(".js-plotly-plot", timeout=120_000)
    page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot').length >= {at_least}", timeout=120_000)
    drawn = page.locator(".js-plotly-plot").evaluate_all(
        "plots => plots.map(p => p.querySelectorAll('.main-svg g.trace, canvas').length > 0)")
    assert len(drawn) >= at_least and all(drawn), drawn


def _open(page, server: str, title: str) -> None:
    """Open the app and follow its navigation link, as a visitor does (a deep link to a page is
    answered with the Overview by a fresh server, so it would not test that page)."""
    page.goto(server)
    _settle(page)
    page.get_by_role("link", name=title).click()
    _settle(page)
    assert page.locator("h1").first.inner_text() == ("Poison Lab" if title == "Overview" else title)


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders(server, browser, path):
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    _open(page, server, PAGES[path])
    charts, words = FIRST_VIEW[path]
    _charts_drawn(page, charts)
    assert words in page.inner_text("[data-testid='stMain']"), (path, words)
    page.screenshot(path=str(_shots() / f"{path}.png"), full_page=True)
    page.close()


def test_poison_lab_flow_in_browser(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 4400})  # the whole result in one screenshot
    _open(page, server, "Poison lab")
    page.get_by_role("button", name="Craft poisons and retrain the victims").click()
    page.wait_for_selector("text=Verdict", timeout=300_000)
    _settle(page)
    main = page.inner_text("[data-testid='stMain']")
    for words in ("Softmax model: ", "poisons flagged", "judged clean-label"):
        assert words in main, words
    assert "LGM model: " not in main  # one model's details at a time: its tab draws when opened
    verdict = page.inner_text("[data-testid='stTable']")  # the verdict table, plain HTML
    assert "Softmax" in verdict and "LGM" in verdict and "poisoned?" in verdict
    _charts_drawn(page, 2)  # the softmax model's poison path and filter scores (2-D: decision regions too)
    page.screenshot(path=str(_shots() / "poison_lab_result.png"), full_page=True)
    page.get_by_role("tab", name="LGM model").click()
    page.wait_for_selector("text=LGM model: ", timeout=60_000)
    _settle(page)
    main = page.inner_text("[data-testid='stMain']")
    assert "LGM model: " in main and "Softmax model: " not in main and "poisons flagged" in main
    _charts_drawn(page, 2)
    page.screenshot(path=str(_shots() / "poison_lab_result_lgm.png"), full_page=True)
    page.close()


def test_sidebar_choice_survives_navigation(server, browser):
    """Choose CIFAR-10 in the sidebar, go to other pages: the sidebar still says CIFAR-10."""
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.goto(server)
    _settle(page)
    page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").first.click()
    page.get_by_role("option", name="CIFAR-10").click()
    _settle(page)
    for name in ("Feature space", "Attack outcomes", "Overview"):
        page.get_by_role("link", name=name).click()
        _settle(page)
        sidebar = page.locator("[data-testid='stSidebar']").inner_text()
        assert "cifar10_" in sidebar and "mnist_" not in sidebar, (name, sidebar)  # its "Models:" line
    page.screenshot(path=str(_shots() / "sidebar_after_navigation.png"), full_page=True)
    page.close()


def test_guided_tour_in_browser(server, browser):
    """The tour offers to switch the 2-D sidebar to the models with its example; then every step, the
    last three asking for a prediction before the shipped result; each step's screenshot is saved."""
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    _open(page, server, "Guided tour")
    page.screenshot(path=str(_shots() / "tour_0_switch.png"), full_page=True)
    page.get_by_role("button", name=re.compile("^Switch the sidebar to")).click()
    _settle(page)
    assert "high-d" in page.locator("[data-testid='stSidebar']").inner_text()
    for step in range(1, 8):
        assert f"Step {step} of 7" in page.inner_text("body")
        if step >= 5:
            assert "Predict first" in page.inner_text("[data-testid='stMain']")
            page.locator("[data-testid='stMain'] [data-testid='stRadio'] [role='radiogroup'] label").first.click()
            _settle(page)
            page.get_by_role("button", name="Reveal the result").click()
            _settle(page)
            assert "You predicted" in page.inner_text("[data-testid='stMain']")
        page.screenshot(path=str(_shots() / f"tour_{step}.png"), full_page=True)
        if step < 7:
            page.get_by_role("button", name="Next").click()
            _settle(page)
    page.close()


def test_red_team_round_with_two_browsers(server, browser):
    """The teacher opens a round; two students, each in their own browser context, craft in the lab,
    join and submit; the leaderboard shows both; the reveal names the hidden filter to the students."""
    teacher = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
    _open(teacher, server, "Teacher")
    teacher.get_by_label("Teacher's passphrase", exact=True).fill(PASSPHRASE)
    teacher.get_by_role("button", name="Sign in").click()
    _settle(teacher)
    teacher.get_by_role("button", name="Open the round").click()
    _settle(teacher)
    assert re.search(r"Round \d+: open", teacher.inner_text("[data-testid='stMain']"))
    students = {}
    for nick in ("Ana", "Ben"):
        page = browser.new_context(viewport={"width": 1400, "height": 2400}).new_page()
        _open(page, server, "Poison lab")
        page.get_by_role("button", name="Craft poisons and retrain the victims").click()
        page.wait_for_selector("text=Verdict", timeout=300_000)
        _settle(page)
        page.get_by_role("link", name="Red-team round").click()
        _settle(page)
        page.get_by_label("Your nickname for this round", exact=True).fill(nick)
        page.get_by_role("button", name="Join the round").click()
        _settle(page)
        page.get_by_role("button", name="Submit to the round").click()
        _settle(page)
        assert "being judged" in page.inner_text("[data-testid='stMain']")
        students[nick] = page
    for page in students.values():  # the leaderboard refreshes itself every 2 s
        page.wait_for_function("document.querySelector('[data-testid=\"stTable\"]') && "
                               "['Ana', 'Ben'].every(n => document.querySelector('[data-testid=\"stTable\"]')"
                               ".innerText.includes(n))", timeout=240_000)
    teacher.get_by_role("link", name="Teacher").click()  # a rerun in the signed-in session
    _settle(teacher)
    teacher.get_by_role("button", name="Reveal the hidden filter").click()
    _settle(teacher)
    students["Ana"].wait_for_selector("text=The hidden filter was", timeout=60_000)
    for nick, page in students.items():
        page.screenshot(path=str(_shots() / f"red_team_{nick}.png"), full_page=True)
    teacher.screenshot(path=str(_shots() / "teacher.png"), full_page=True)
    for page in (teacher, *students.values()):
        assert page.locator(ERRORS).count() == 0
        page.context.close()


def test_server_restart_while_a_page_is_open(browser):
    """Restart the server under an open page: the page reconnects and renders again, no error box."""
    port = _free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1"]

    def start():
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return proc
            except OSError:
                time.sleep(0.5)
        proc.kill()
        raise AssertionError("server did not start")

    proc = start()
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        _open(page, f"http://127.0.0.1:{port}", "Poison gallery")
        proc.terminate()
        proc.wait(timeout=20)
        proc = start()
        page.wait_for_timeout(3000)
        page.reload()  # a visitor pressing F5 after the teacher restarted the server
        _settle(page)
        page.get_by_role("link", name="Poison gallery").click()
        _settle(page)
        assert page.locator("h1").first.inner_text() == "Poison gallery"
    finally:
        page.close()
        proc.terminate()
        proc.wait(timeout=20)
