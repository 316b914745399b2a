"""Classroom load: one dashboard server, N simulated students on Streamlit's own websocket protocol.

    POISONLAB_DATA_DIR=DIR python bench/bench_classroom.py --students 10 30 --duration 120 [--rev HEAD]
        [--craft-every 0] [--server-option runner.postScriptGC=false]

For each N it starts its own server on loopback (``streamlit run app.py`` in-process, file watching
off so that edits made elsewhere in the tree cannot rerun it; ``--rev`` serves a ``git archive`` of
that commit instead of the working tree; ``--server-option`` passes Streamlit config options), lets
one "teacher" open every page on both data sets (the warm-up: the caches a class shares get filled)
and then repeat the students' actions alone (each action's server CPU cost, whatever the machine's
load), then runs N students in one asyncio process. Each student is a websocket client that
speaks what the browser speaks (``BackMsg.rerun_script`` out; ``ForwardMsg`` in: ``new_session``,
``navigation``, ``delta``, ``auto_rerun``, ``script_finished``) and follows a scripted mix, acting
every ``--interval`` seconds (jittered by +-1 s; never before its previous page has settled):

- open the app (Overview);
- one student in ``--craft-every`` (5) goes to the Poison lab, presses "Craft poisons and retrain
  the victims" with the default settings (the lab's measured opening press, ``core.lab.lab_default``:
  on MNIST 2-D 5 poisons, 30 steps; 200 steps before 2026-12-02), stays on the page (its
  status fragment polls once a second, as the browser does on the server's ``auto_rerun``) until the
  "Verdict" is drawn, then carries on like the others;
- a loop over the pages from a random starting point: Guided tour + two "Next" clicks (where the
  tour offers to switch the sidebar to models that have its example, the first click takes that
  offer), Feature space + a click on a point of the LGM chart (a plotly selection event), Poison
  gallery, Attack outcomes, Defences, Overview (and the Red-team round with ``--round``); once, at a
  random point of the loop, the sidebar's Dataset is changed to the other data set.

``--mix in-turn`` is the other classroom: every student visits every page in the menu's order from
the Overview (Overview, Guided tour, Feature space, Poison lab, Poison gallery, Attack outcomes,
Defences, and the Red-team round with ``--round``), acting ``--interval`` seconds after its last
page settled (not on a clock). ``--round`` opens a red-team round (in a throwaway database) before
the class arrives, so its page, leaderboard and store are part of the load.

The server's warm-up (``pages/warm.py``, started by the first visitor) is waited for before the
teacher's visits, as a teacher starts the server before the lesson; ``warm_up_s`` records how long it
took, and the teacher's first visits (``warm_up``) are then the first visits after a data-set switch.

A page settle is the time from sending a rerun_script (page switch, click, dataset change) until
the server's ``script_finished`` for that run. No new actions start after ``--duration`` s; students
still waiting for a craft wait up to ``--craft-timeout`` s more; every wait has a timeout and the
whole run a hard one, after which the server is terminated.

Crafts are counted on both sides: the client counts clicks sent and verdicts drawn; the server's
own job queue (the pages' cached ``job_queue()``, read by a thread inside the server process and
written to a file every 0.5 s) says how many jobs were submitted and finished and how long the
longest one waited (queued jobs included), so a craft run twice or lost shows up. The server's
resident memory is sampled every 0.5 s with psutil. Results: a list of runs in ``--out`` (default
``bench/results/classroom_load.json``; a run replaces an earlier one with the same N,
``--craft-every`` and server options), and the JSON printed. A page run that has not settled after
``--settle-timeout`` s counts in the percentiles at that value (a lower
bound) and in ``settle_timeouts``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "classroom_load.json"
CRAFT_LABEL = "Craft poisons and retrain the victims"
LOOP = ["tour", "tour_next", "tour_next", "feature_space", "fs_click", "gallery", "outcomes", "defences", "overview"]
IN_TURN = ["overview", "tour", "feature_space", "poison_lab", "gallery", "outcomes", "defences"]
PAGE_URL = {"overview": "", "tour": "tour", "feature_space": "feature_space", "poison_lab": "poison_lab",
            "gallery": "gallery", "outcomes": "outcomes", "defences": "defences", "red_team": "red_team"}
SWITCH_PREFIX = "Switch the sidebar to"
FINISHED_OK, FINISHED_COMPILE_ERROR, FINISHED_EARLY, FINISHED_FRAGMENT = 0, 1, 2, 3


# --- the server ---------------------------------------------------------------------------------------------
def serve(port: int, stats_path: str, app_root: Path, options: list[str]) -> None:
    """Run the dashboard in this process, plus a thread that copies the job queue's stats to a file."""
    import logging

    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").setLevel(logging.ERROR)

    def queue_factory():
        """The pages' cached ``job_queue()`` (in ``pages.common`` or wherever the pages keep it)."""
        for name, mod in list(sys.modules.items()):
            if name.startswith("pages.") and callable(getattr(mod, "job_queue", None)):
                return mod.job_queue
        return None

    def poll() -> None:
        peak_queued = 0.0
        while True:
            time.sleep(0.5)
            factory = queue_factory()
            try:
                if factory is None:  # no page with the queue has run yet: only the warm-up to report
                    raise LookupError("no queue yet")
                q = factory()  # the same cached queue the pages use
                stats = q.stats()
                # stats' max_wait_s counts jobs once they start; a job still waiting when its student gives
                # up never does, so watch the queued ones too (while their browser session is connected)
                alive = getattr(q, "_alive", lambda owner: True)
                queued = [j.wait_s for j in list(getattr(q, "_pending", [])) if alive(j.owner)]
                peak_queued = max([peak_queued, *queued])
                stats["max_wait_incl_queued_s"] = max(stats.get("max_wait_s", 0.0), peak_queued)
            except LookupError:
                stats = {}
            except Exception as exc:  # noqa: BLE001 - reported, never fatal to the server
                stats = {"error": f"{type(exc).__name__}: {exc}"}
            warm = sys.modules.get("pages.warm")
            if warm is not None and getattr(warm, "STATE", None):
                stats["warm"] = {"done_s": warm.STATE.get("done_s"), "error": warm.STATE.get("error"),
                                 "steps": len(warm.STATE.get("log", []))}
            admission = sys.modules.get("pages.admission")  # page runs in turn (absent before 2026-12-02)
            if admission is not None:
                turns = admission.PAGE_RUNS
                stats["page_runs_in_turn"] = {"slots": turns.slots, "wait_s": turns.wait_s,
                                              "went_ahead_without_a_slot": turns.waited_out}
            core = sys.modules.get("core")
            stats["served_from"] = str(Path(getattr(core, "__file__", "") or "?").parent.parent)
            if options:  # as the server sees them
                from streamlit import config

                stats["options"] = {o.partition("=")[0]: config.get_option(o.partition("=")[0]) for o in options}
            tmp = stats_path + ".tmp"
            with open(tmp, "w") as fh:
                json.dump(stats, fh)
            os.replace(tmp, stats_path)

    threading.Thread(target=poll, daemon=True, name="bench-queue-stats").start()
    from streamlit.web import cli

    os.chdir(app_root)
    sys.argv = ["streamlit", "run", str(app_root / "app.py"), "--server.headless", "true", "--server.port", str(port),
                "--server.address", "127.0.0.1", "--server.fileWatcherType", "none", "--server.runOnSave", "false",
                "--browser.gatherUsageStats", "false"]
    for option in options:  # --server-option runner.postScriptGC=false -> --runner.postScriptGC false
        key, _, value = option.partition("=")
        sys.argv += [f"--{key}", value]
    sys.exit(cli.main())


class Server:
    """Our own dashboard process: started, sampled (RSS, CPU), terminated."""

    def __init__(self, log_path: Path, app_root: Path, options: list[str], env: dict | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.stats_path = str(log_path.with_suffix(".queue.json"))
        Path(self.stats_path).unlink(missing_ok=True)
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", str(self.port),
                                      self.stats_path, "--app-root", str(app_root),
                                      *[f"--server-option={o}" for o in options]], cwd=app_root,
                                     stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.rss_max = 0
        self.window_rss_max = 0
        self.rss_trace: list[tuple[float, float]] = []  # (s since the window began, RSS MB), every 15 s
        self.window_t0 = time.monotonic()
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        import psutil

        try:
            p = psutil.Process(self.proc.pid)
            while not self._stop.is_set():
                rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
                self.rss_max = max(self.rss_max, rss)
                self.window_rss_max = max(self.window_rss_max, rss)
                since = time.monotonic() - self.window_t0
                if not self.rss_trace or since >= self.rss_trace[-1][0] + 15:
                    self.rss_trace.append((round(since, 1), round(rss / 2**20, 1)))
                self._stop.wait(0.5)
        except psutil.Error:
            pass

    def cpu_s(self) -> float:
        import psutil

        try:
            t = psutil.Process(self.proc.pid).cpu_times()
            return t.user + t.system
        except psutil.Error:
            return float("nan")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError("the server did not answer /_stcore/health")

    def queue_stats(self) -> dict | None:
        try:
            return json.loads(Path(self.stats_path).read_text())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


# --- one simulated browser ----------------------------------------------------------------------------------
class Student:
    """One browser tab on the websocket protocol: sends reruns, reads the app's messages, keeps the
    widget states a browser would echo, polls fragments that ask for it (``auto_rerun``)."""

    def __init__(self, name: str, port: int, rec: dict, settle_timeout: float) -> None:
        self.name, self.port, self.rec, self.settle_timeout = name, port, rec, settle_timeout
        self.ws = None
        self.pages: dict[str, str] = {}          # url path -> page script hash (from ``navigation``)
        self.page_hash = ""
        self.widgets: dict[str, tuple] = {}      # this run's elements with an id: id -> (type, label)
        self.kept: dict[str, object] = {}        # widget id -> WidgetState the browser keeps sending
        self.cache: dict[str, tuple] = {}        # ForwardMsg hash -> (summary, last run it was used in)
        self.runs = 0
        self.headings: list[str] = []            # headings drawn in the current full run
        self.finished = asyncio.Event()
        self.waiting = False
        self.timers: dict[str, asyncio.Task] = {}
        self.frag_sent: dict[str, float] = {}
        self.verdict_at: float | None = None
        self.status_texts: list[tuple[float, str, str]] = []
        self.exceptions: list[str] = []
        self.models = ""                         # the sidebar's "Models: ..." caption: which data set is shown
        self.settled = False                     # did the last rerun we sent finish (its widgets are all known)
        self.settled_at: float | None = None     # when it did

    async def connect(self) -> None:
        from websockets.asyncio.client import connect

        url = f"ws://127.0.0.1:{self.port}/_stcore/stream"
        self.ws = await asyncio.wait_for(connect(url, subprotocols=["streamlit"], max_size=None, open_timeout=30,
                                                 ping_interval=None), 60)
        self.reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        for t in self.timers.values():
            t.cancel()
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), 5)
            except Exception:  # noqa: BLE001
                pass
        if getattr(self, "reader", None):
            self.reader.cancel()

    # messages in
    async def _read(self) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        try:
            async for data in self.ws:
                msg = ForwardMsg()
                msg.ParseFromString(data)
                self._handle(msg)
        except Exception as exc:  # noqa: BLE001 - a dropped connection ends this student's waits
            self.rec["errors"].append(f"{self.name}: connection: {type(exc).__name__}: {exc}")
        self.finished.set()

    def _summary(self, msg) -> tuple:
        el = msg.delta.new_element
        kind = el.WhichOneof("type")
        inner = getattr(el, kind)
        ident = getattr(inner, "id", "") if kind != "heading" else ""
        text = ""
        if kind in ("heading", "alert", "markdown"):
            text = inner.body
        elif kind == "progress":
            text = inner.text
        elif kind == "exception":
            text = f"{inner.type}: {inner.message}"
        elif kind == "plotly_chart" and ident:
            # a click can only hit a drawn point: keep the number of points of the first clickable trace
            try:
                traces = json.loads(inner.spec).get("data", [])
                data = next((t["customdata"] for t in traces if t.get("customdata")), [])
                # plotly writes numpy arrays as {"dtype", "bdata", "shape": "1000, 2"}, lists as lists
                text = str(int(str(data["shape"]).split(",")[0]) if isinstance(data, dict) else len(data))
            except (ValueError, AttributeError, TypeError, KeyError):
                text = "0"
        return kind, ident, getattr(inner, "label", ""), text

    def _handle(self, msg) -> None:
        kind = msg.WhichOneof("type")
        now = time.monotonic()
        if kind == "new_session":
            if not msg.metadata.run.fragment_ids:  # a full run: the browser forgets the last one's elements
                self.widgets, self.headings = {}, []
                for t in self.timers.values():  # and stops polling fragments (App.cleanupAutoReruns)
                    t.cancel()
                self.timers.clear()
            self.page_hash = msg.new_session.page_script_hash or self.page_hash
        elif kind == "navigation":
            for p in msg.navigation.app_pages:
                self.pages[p.url_pathname] = p.page_script_hash
            self.page_hash = msg.navigation.page_script_hash or self.page_hash
        elif kind in ("delta", "ref_hash"):
            if kind == "ref_hash":  # a message the server knows we hold (we listed it as cached)
                hit = self.cache.get(msg.ref_hash)
                if hit is None:
                    self.rec["errors"].append(f"{self.name}: unknown ref_hash")
                    return
                summary = hit[0]
                self.cache[msg.ref_hash] = (summary, self.runs)
            elif msg.delta.WhichOneof("type") == "new_element":
                summary = self._summary(msg)
                if msg.metadata.cacheable and msg.hash:
                    self.cache[msg.hash] = (summary, self.runs)
            else:
                return
            etype, ident, label, text = summary
            if ident:
                self.widgets[ident] = (etype, label, text)
            if etype == "markdown" and text.startswith("Models: "):
                self.models = text
            if etype == "heading":
                self.headings.append(text)
                if text == "Verdict" and self.verdict_at is None:
                    self.verdict_at = now
            elif etype in ("alert", "progress") and ("Waiting for a free worker" in text or etype == "progress"):
                self.status_texts.append((now, etype, text))
            elif etype == "alert" and "still going" in text:
                self.rec["errors"].append(f"{self.name}: {text}")
            elif etype == "exception":
                self.exceptions.append(text)
        elif kind == "auto_rerun":
            fid = msg.auto_rerun.fragment_id
            if fid and fid not in self.timers:
                self.timers[fid] = asyncio.create_task(self._poll_fragment(fid, msg.auto_rerun.interval))
        elif kind == "stop_auto_rerun":
            for fid in msg.stop_auto_rerun.fragment_ids:
                t = self.timers.pop(fid, None)
                if t:
                    t.cancel()
        elif kind == "script_finished":
            status = msg.script_finished
            if status == FINISHED_FRAGMENT:
                for fid in msg.metadata.run.fragment_ids or list(self.frag_sent):
                    sent = self.frag_sent.pop(fid, None)
                    if sent is not None:
                        self.rec["fragment_settles"].append(now - sent)
            elif status in (FINISHED_OK, FINISHED_COMPILE_ERROR):
                self.runs += 1
                # the browser drops cached messages not used in its last two runs (global.maxCachedMessageAge)
                self.cache = {h: v for h, v in self.cache.items() if self.runs - v[1] <= 2}
                self.widgets = {i: w for i, w in self.widgets.items()}
                self.kept = {i: s for i, s in self.kept.items() if i in self.widgets}
                if self.waiting:
                    self.waiting = False
                    self.finished.set()

    # messages out
    def _client_state(self, page_hash: str, triggers: dict | None = None, fragment_id: str = ""):
        from streamlit.proto.BackMsg_pb2 import BackMsg

        back = BackMsg()
        cs = back.rerun_script
        cs.query_string = ""
        cs.page_script_hash = page_hash
        cs.page_name = ""
        if fragment_id:
            cs.fragment_id, cs.is_auto_rerun = fragment_id, True
        states = {**self.kept, **(triggers or {})}
        for ident, state in states.items():
            ws = cs.widget_states.widgets.add()
            ws.CopyFrom(state)
            ws.id = ident
        cs.cached_message_hashes.extend(self.cache)
        cs.context_info.timezone = "UTC"
        cs.context_info.locale = "en-GB"
        return back.SerializeToString()

    async def _poll_fragment(self, fid: str, interval: float) -> None:
        try:
            while True:
                await asyncio.sleep(interval)
                self.frag_sent.setdefault(fid, time.monotonic())
                await self.ws.send(self._client_state(self.page_hash, fragment_id=fid))
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001
            self.rec["errors"].append(f"{self.name}: fragment poll: {type(exc).__name__}: {exc}")

    async def rerun(self, label: str, page_hash: str, triggers: dict | None = None) -> float | None:
        """Send one rerun and wait for its script_finished: the page settle (None on timeout)."""
        self.waiting = True
        self.finished.clear()
        self.exceptions = []
        t0 = time.monotonic()
        await self.ws.send(self._client_state(page_hash, triggers))
        try:
            await asyncio.wait_for(self.finished.wait(), self.settle_timeout)
        except asyncio.TimeoutError:
            self.waiting = self.settled = False
            self.rec["settle_timeouts"].append(label)
            # counted in the percentiles at the timeout: a lower bound of what the student waited
            self.rec["settles"].append((label, self.settle_timeout))
            return None
        dt = time.monotonic() - t0
        self.settled, self.settled_at = True, time.monotonic()
        self.rec["settles"].append((label, dt))
        for e in self.exceptions:
            self.rec["exceptions"].append(f"{label}: {e}")
        return dt

    def find(self, etype: str, *, suffix: str = "", label: str = "") -> str | None:
        """A widget's id by type and key suffix or label (a label ending in "to" matches its start)."""
        for ident, (t, lab, _) in self.widgets.items():
            matches = not label or lab == label or (label == SWITCH_PREFIX and str(lab).startswith(label))
            if t == etype and (not suffix or ident.endswith("-" + suffix)) and matches:
                return ident
        return None

    # what a student does
    async def goto(self, page: str) -> float | None:
        return await self.rerun(page, self.pages.get(PAGE_URL[page], ""))

    async def click(self, label: str, button_id: str | None) -> float | None:
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        if button_id is None:
            self.rec["errors"].append(f"{self.name}: no button for {label}")
            return None
        return await self.rerun(label, self.page_hash, {button_id: WidgetState(trigger_value=True)})

    async def set_widget(self, label: str, ident: str | None, state) -> float | None:
        if ident is None:
            self.rec["errors"].append(f"{self.name}: no widget for {label}")
            return None
        self.kept[ident] = state
        return await self.rerun(label, self.page_hash)


async def student(i: int, port: int, rec: dict, args, t_end: float, rng: random.Random) -> None:
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    s = Student(f"s{i:02d}", port, rec, args.settle_timeout)
    crafter = args.craft_every > 0 and i % args.craft_every == 0
    await asyncio.sleep(rng.uniform(0, args.interval))  # a class does not open the app in the same millisecond
    last = time.monotonic()
    try:
        await s.connect()
        await s.rerun("open", "")  # what the browser sends on connect: no page hash, the URL's path ("")
        loop = LOOP + (["red_team"] if args.round else [])
        start = rng.randrange(len(loop))
        cycle = loop[start:] + loop[:start]  # every student loops over the pages, from its own starting point
        if args.mix == "in-turn":  # every page in the menu's order, from the Overview
            cycle = IN_TURN + (["red_team"] if args.round else [])
        prefix = ["poison_lab", "craft"] if crafter else []  # a crafter crafts once, first
        dataset_at = len(prefix) + rng.randrange(3, 10)
        step = 0
        while time.monotonic() < t_end:
            # in turn: act --interval s after the last run settled; the loop: on a jittered clock
            wait = (s.settled_at or last) + args.interval - time.monotonic() if args.mix == "in-turn" else \
                last + args.interval + rng.uniform(-1, 1) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if time.monotonic() >= t_end:
                break
            last = time.monotonic()
            action = "dataset" if step == dataset_at else \
                prefix[step] if step < len(prefix) else cycle[(step - len(prefix)) % len(cycle)]
            step += 1
            rec["actions"] += 1
            if action in PAGE_URL:
                await s.goto(action)
            elif action == "tour_next":
                if s.page_hash != s.pages.get("tour") or not s.settled:
                    if await s.goto("tour") is None:
                        rec["skipped"] += 1
                        continue
                button = s.find("button", suffix="tour_next")
                if button is None:  # the sidebar's models have no tour example: take the offer to switch
                    switch = s.find("button", label=SWITCH_PREFIX)
                    if switch is not None:
                        await s.click("tour_switch", switch)
                        continue
                await s.click("tour_next", button)
            elif action == "fs_click":
                if s.page_hash != s.pages.get("feature_space") or not s.settled:
                    if await s.goto("feature_space") is None:
                        rec["skipped"] += 1
                        continue
                chart = s.find("plotly_chart", suffix="fs_lgm")
                points = int(s.widgets[chart][2] or 0) if chart else 0
                if chart and not points:
                    rec["errors"].append(f"{s.name}: could not count the feature space chart's points")
                idx = rng.randrange(max(points, 1))
                sel = {"selection": {"points": [{"curve_number": 0, "point_number": idx, "point_index": idx,
                                                 "customdata": [idx, 0]}],
                                     "point_indices": [idx], "box": [], "lasso": []}}
                settled = await s.set_widget("fs_click", chart, WidgetState(string_value=json.dumps(sel)))
                if settled is not None and not any(h.startswith("Test image #") for h in s.headings):
                    rec["errors"].append(f"{s.name}: a click on the feature space drew no test image")
            elif action == "dataset":
                if not s.settled and await s.goto("overview") is None:
                    rec["skipped"] += 1
                    continue
                ident = s.find("selectbox", suffix="_w_dataset")
                current = next((v.string_value for k, v in s.kept.items() if k == ident), "MNIST")
                new = "CIFAR-10" if current == "MNIST" else "MNIST"
                settled = await s.set_widget("dataset", ident, WidgetState(string_value=new))
                if settled is not None and ("cifar10" in s.models) != (new == "CIFAR-10"):
                    rec["errors"].append(f"{s.name}: the dataset change to {new} did not show ({s.models})")
            elif action == "craft":
                if (s.page_hash != s.pages.get("poison_lab") or not s.settled) and await s.goto("poison_lab") is None:
                    rec["skipped"] += 1  # still waiting for the lab page: press next time
                    prefix.insert(step, "craft")
                    continue
                button = s.find("button", label=CRAFT_LABEL)
                if button is None:
                    rec["errors"].append(f"{s.name}: no craft button on the settled Poison lab page")
                    continue
                t_click = time.monotonic()
                s.verdict_at, s.status_texts = None, []
                rec["crafts_requested"] += 1
                # the student stays on the page until the verdict, even if the click's run is slow to settle
                await s.click("craft", button)
                deadline = min(t_click + args.craft_timeout, t_end + args.craft_timeout)
                while s.verdict_at is None and time.monotonic() < deadline and not s.reader.done():
                    await asyncio.sleep(0.2)
                started = next((t for t, kind, _ in s.status_texts if kind == "progress"), None)
                waits = [float(m.group(1)) for _, kind, text in s.status_texts
                         if (m := re.search(r"Waiting (\d+) s so far", text))]
                if s.verdict_at is None:
                    rec["errors"].append(f"{s.name}: no verdict within {args.craft_timeout:.0f} s of the click")
                    rec["crafts"].append({"student": s.name, "completed": False,
                                          "waited_s": round(time.monotonic() - t_click, 1),
                                          "first_progress_seen_s": round(started - t_click, 2) if started else None,
                                          "max_waiting_shown_s": max(waits, default=None),
                                          "last_status": s.status_texts[-1][2] if s.status_texts else None})
                    continue
                rec["crafts_completed"] += 1
                rec["crafts"].append({"student": s.name, "completed": True,
                                      "turnaround_s": round(s.verdict_at - t_click, 2),
                                      "first_progress_seen_s": round(started - t_click, 2) if started else None,
                                      "max_waiting_shown_s": max(waits, default=None)})
                # after the verdict, wait for the run that drew it to end before acting again
                last = time.monotonic()
                await asyncio.sleep(0.5)
    except Exception as exc:  # noqa: BLE001 - one student's failure is counted, not fatal
        rec["errors"].append(f"{s.name}: {type(exc).__name__}: {exc}")
    finally:
        await s.close()


# --- one run ------------------------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return round(v[lo] + (v[hi] - v[lo]) * (k - lo), 3)


async def warm_up(port: int, rec: dict, settle_timeout: float, server_cpu, warm_state=None) -> tuple[dict, dict]:
    """The teacher opens every page on both data sets before the class arrives (shared caches fill),
    then goes through the students' actions once more on MNIST, alone on the server: what each costs
    the server in CPU seconds once warm (``server_cpu()`` before and after), whatever the machine's load."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    s = Student("teacher", port, rec, settle_timeout)
    t0 = time.monotonic()
    out, cost = {}, {}
    try:
        await s.connect()
        out["open"] = await s.rerun("open", "")
        t_warm = time.monotonic()
        while warm_state is not None and time.monotonic() - t_warm < 900:  # the server's own warm-up, if it has one
            state = warm_state()
            if state is None and time.monotonic() - t_warm > 10:
                break  # an app without a warm-up (an older revision)
            if state is not None and state.get("done_s") is not None:
                out["server_warm_up_s"] = state["done_s"]
                if state.get("error"):
                    rec["errors"].append(f"warm-up: {state['error']}")
                break
            await asyncio.sleep(0.5)
        for dataset in ("MNIST", "Fashion-MNIST", "CIFAR-10"):
            if dataset != "MNIST":
                out[f"dataset {dataset}"] = await s.set_widget("dataset", s.find("selectbox", suffix="_w_dataset"),
                                                               WidgetState(string_value=dataset))
            for page in ("tour", "feature_space", "poison_lab", "gallery", "outcomes", "defences", "overview"):
                out[f"{page} {dataset}"] = await s.goto(page)
        await s.set_widget("dataset", s.find("selectbox", suffix="_w_dataset"), WidgetState(string_value="MNIST"))
        sel = {"selection": {"points": [{"curve_number": 0, "point_number": 7, "point_index": 7, "customdata": [7, 0]}],
                             "point_indices": [7], "box": [], "lasso": []}}
        steps = [("overview", lambda: s.goto("overview")), ("tour", lambda: s.goto("tour")),
                 ("tour_next", lambda: s.click("tour_next", s.find("button", suffix="tour_next"))),
                 ("feature_space", lambda: s.goto("feature_space")),
                 ("fs_click", lambda: s.set_widget("fs_click", s.find("plotly_chart", suffix="fs_lgm"),
                                                   WidgetState(string_value=json.dumps(sel)))),
                 ("gallery", lambda: s.goto("gallery")), ("outcomes", lambda: s.goto("outcomes")),
                 ("defences", lambda: s.goto("defences")), ("poison_lab", lambda: s.goto("poison_lab")),
                 ("dataset", lambda: s.set_widget("dataset", s.find("selectbox", suffix="_w_dataset"),
                                                  WidgetState(string_value="CIFAR-10")))]
        for name, step in steps:
            c0 = server_cpu()
            settle = await step()
            await asyncio.sleep(0.3)  # the last messages' sends
            cost[name] = {"settle_s": round(settle, 2) if settle is not None else None,
                          "server_cpu_s": round(server_cpu() - c0, 2)}
    finally:
        await s.close()
    out = {k: (round(v, 2) if v is not None else None) for k, v in out.items()}
    out["total_s"] = round(time.monotonic() - t0, 1)
    return out, cost


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def run_once(n: int, args) -> dict:
    import psutil

    log = Path(args.log_dir) / f"classroom_server_{n}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {} if args.page_slots is None else {"POISONLAB_PAGE_SLOTS": str(args.page_slots)}
    if args.round:  # a red-team round open before the class arrives, in a throwaway database
        from core.rounds import RoundRules, RoundStore

        db = Path(tempfile.mkdtemp(prefix="bench-rounds-")) / "rounds.sqlite"
        env["POISONLAB_ROUNDS_DB"] = str(db)
        RoundStore(db).open_round(RoundRules(dataset="mnist", space="2-D", model="lgm",
                                             model_path="checkpoints/mnist_lgm_d2.pt", head_type="lgm",
                                             victim_head="warm", defence="lgm", max_level=25, max_poisons=5,
                                             minutes=120))
    server = Server(log, args.app_root, args.server_option, env)
    loads: list[float] = []
    stop_load = threading.Event()

    def sample_load() -> None:
        while not stop_load.wait(2.0):
            loads.append(load1())

    try:
        server.wait_ready(120)
        warm_rec = {"settles": [], "settle_timeouts": [], "fragment_settles": [], "errors": [], "exceptions": []}
        warm_state = lambda: (server.queue_stats() or {}).get("warm")  # noqa: E731
        warm, cost = asyncio.run(asyncio.wait_for(warm_up(server.port, warm_rec, args.settle_timeout, server.cpu_s,
                                                          warm_state), 1800)) if args.warm_up else (None, None)
        rec = {"settles": [], "settle_timeouts": [], "fragment_settles": [], "errors": [], "exceptions": [],
               "crafts": [], "crafts_requested": 0, "crafts_completed": 0, "actions": 0, "skipped": 0}
        rng = random.Random(args.seed + n)
        load_before = load1()
        server.window_rss_max = 0
        server.window_t0 = time.monotonic()  # first: a sample between the two stores sees the new start
        server.rss_trace = []
        me = psutil.Process()
        cpu0, scpu0 = sum(me.cpu_times()[:2]), server.cpu_s()
        threading.Thread(target=sample_load, daemon=True).start()
        t0 = time.monotonic()

        async def classroom() -> None:
            t_end = time.monotonic() + args.duration
            tasks = [asyncio.create_task(student(i, server.port, rec, args, t_end, random.Random(rng.random())))
                     for i in range(n)]
            done, pending = await asyncio.wait(tasks, timeout=args.duration + args.craft_timeout + 120)
            for t in pending:  # the hard stop
                t.cancel()
                rec["errors"].append("a student was still busy at the hard timeout")
            await asyncio.gather(*pending, return_exceptions=True)

        asyncio.run(classroom())
        wall = time.monotonic() - t0
        stop_load.set()
        stats = drained_stats(server, args.craft_timeout)
        cpu1, scpu1 = sum(me.cpu_times()[:2]), server.cpu_s()
    finally:
        stop_load.set()
        server.stop()

    settles = [d for _, d in rec["settles"]]
    by_page: dict[str, list[float]] = {}
    for label, d in rec["settles"]:
        by_page.setdefault(label, []).append(d)
    # The server's queue knows how long each job that started had waited; a job still queued when its
    # student gave up never started, and only its page's "Waiting N s so far" tells how long it waited.
    shown = [c["max_waiting_shown_s"] for c in rec["crafts"] if c.get("max_waiting_shown_s") is not None]
    from_server = bool(stats and "max_wait_incl_queued_s" in stats)
    waits = ([stats["max_wait_incl_queued_s"]] if from_server else []) + shown
    max_wait = max(waits, default=None)
    twice = None
    if stats and "submitted" in stats:
        twice = stats["submitted"] != rec["crafts_requested"] or stats["done"] != rec["crafts_completed"]
    return {
        "students": n,
        "p50_settle_s": pct(settles, 50),
        "p95_settle_s": pct(settles, 95),
        "crafts_requested": rec["crafts_requested"],
        "crafts_completed": rec["crafts_completed"],
        "max_queue_wait_s": round(max_wait, 2) if max_wait is not None else None,
        "max_rss_mb": round(server.window_rss_max / 2**20, 1),
        "rss_mb_every_15s": server.rss_trace,
        "max_queue_wait_from": "server job queue: jobs that started and jobs still queued, sampled every 0.5 s"
        if from_server else "the waits shown to students",
        "max_settle_s": round(max(settles), 3) if settles else None,
        "page_runs": len(settles),
        "settle_timeouts": len(rec["settle_timeouts"]),
        "per_action": {k: {"n": len(v), "p50_s": pct(v, 50), "p95_s": pct(v, 95), "max_s": round(max(v), 3)}
                       for k, v in sorted(by_page.items())},
        "fragment_polls": {"n": len(rec["fragment_settles"]), "p50_s": pct(rec["fragment_settles"], 50),
                           "p95_s": pct(rec["fragment_settles"], 95)},
        "crafts": rec["crafts"],
        "server_queue_stats": stats,
        "crafts_lost_or_run_twice": twice,
        "actions": rec["actions"],
        "actions_skipped": rec["skipped"],  # a click whose page had not settled within the timeout
        "actions_per_student_per_min": round(rec["actions"] / n / (min(wall, args.duration) / 60), 2),
        "exceptions": rec["exceptions"][:20],
        "n_exceptions": len(rec["exceptions"]),
        "errors": rec["errors"][:20],
        "n_errors": len(rec["errors"]),
        "max_rss_mb_incl_warm_up": round(server.rss_max / 2**20, 1),
        "warm_up": warm,
        "warm_action_cost": cost,
        # what the class asks of the server if every action cost what it cost the teacher alone
        "demand_cores_estimate": round(n / args.interval * sum(cost[a]["server_cpu_s"] for a in LOOP) / len(LOOP), 2)
        if cost else None,
        "wall_s": round(wall, 1),
        "duration_s": args.duration,
        "interval_s": args.interval,
        "craft_every": args.craft_every,
        "mix": args.mix,
        "round_open": args.round,
        "load_before": load_before,
        "load_during_mean": round(sum(loads) / len(loads), 2) if loads else None,
        "load_during_max": max(loads) if loads else None,
        "load_after": load1(),
        "client_cpu_s": round(cpu1 - cpu0, 1),
        "server_cpu_s": round(scpu1 - scpu0, 1),
        "server_cpu_share": round((scpu1 - scpu0) / wall, 2),  # cores' worth the server got, on average
        "settle_timeout_s": args.settle_timeout,
        "page_slots": args.page_slots,  # None: the app's default (pages/admission.py)
    }


def machine() -> dict:
    import streamlit

    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "streamlit": streamlit.__version__, "torch": torch_version,
            "memory_gb": round(__import__("psutil").virtual_memory().total / 2**30, 1)}


def drained_stats(server, timeout: float, poll: float = 0.5) -> dict | None:
    """The server's queue statistics once nothing is queued or running (or after ``timeout`` s):
    read earlier, a craft still finishing looks lost and the accounting is wrong."""
    deadline = time.monotonic() + timeout
    time.sleep(2 * poll)  # the stats thread writes every 0.5 s: let it see the end of the run
    stats = server.queue_stats()
    while stats and (stats.get("queued") or stats.get("running")) and time.monotonic() < deadline:
        time.sleep(poll)
        stats = server.queue_stats()
    if stats is not None:
        stats["drained"] = not (stats.get("queued") or stats.get("running"))
    return stats


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--students", type=int, nargs="+", default=[10, 30])
    p.add_argument("--duration", type=float, default=120.0, help="seconds of student actions per run")
    p.add_argument("--interval", type=float, default=3.0, help="seconds between one student's actions (+-1 s)")
    p.add_argument("--craft-every", type=int, default=5, help="one student in this many crafts (0: none)")
    p.add_argument("--settle-timeout", type=float, default=60.0)
    p.add_argument("--craft-timeout", type=float, default=600.0, help="how long a crafter waits for its verdict")
    p.add_argument("--no-warm-up", dest="warm_up", action="store_false")
    p.add_argument("--mix", choices=["loop", "in-turn"], default="loop",
                   help="loop: the pages from a random start on a jittered clock; in-turn: every page in the menu's "
                        "order, acting --interval s after the last run settled")
    p.add_argument("--round", action="store_true", help="open a red-team round first; its page joins the mix")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--log-dir", default="/tmp")
    p.add_argument("--rev", help="serve this git revision (exported with git archive to a temporary folder) "
                                 "instead of the working tree, which others may be editing")
    p.add_argument("--page-slots", type=int, default=None,
                   help="page runs the server lets run at once (POISONLAB_PAGE_SLOTS; default: the app's, 1)")
    p.add_argument("--server-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a Streamlit config option for the server, e.g. runner.postScriptGC=false (repeatable)")
    p.add_argument("--app-root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    p.add_argument("--serve", nargs=2, metavar=("PORT", "STATS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(int(args.serve[0]), args.serve[1], args.app_root, args.server_option)
        return []
    with tempfile.TemporaryDirectory(prefix="classroom_app_") as tmp:
        if args.rev:
            args.app_root = Path(tmp)
            archive = subprocess.run(["git", "archive", args.rev], cwd=ROOT, check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        return measure(args, argv)


def app_version(args) -> dict:
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    if args.rev:
        return {"commit": git("rev-parse", args.rev), "source": "git archive"}
    return {"commit": git("rev-parse", "HEAD"), "source": "working tree",
            "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no", "--", "app.py",
                                            "pages", "core"))}


def measure(args, argv: list[str] | None) -> list[dict]:
    out = Path(args.out)
    try:
        runs = json.loads(out.read_text()) if out.exists() else []
    except ValueError:
        runs = []
    info = machine()
    for n in args.students:
        result = run_once(n, args)
        result["machine"] = info
        result["app"] = app_version(args)
        result["streamlit"] = info["streamlit"]
        result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        result["command"] = "python bench/bench_classroom.py " + " ".join(argv if argv is not None else sys.argv[1:])
        result["server_options"] = args.server_option
        same = (n, args.craft_every, args.server_option, args.mix, args.round, args.page_slots)
        runs = [r for r in runs if (r.get("students"), r.get("craft_every", 5), r.get("server_options", []),
                                    r.get("mix", "loop"), r.get("round_open", False), r.get("page_slots")) != same]
        runs = sorted(runs + [result], key=lambda r: (r.get("server_options", []), -r.get("craft_every", 5),
                                                      r["students"]))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(runs, indent=1) + "\n")
        print(json.dumps(result, indent=1), flush=True)
    return runs


if __name__ == "__main__":
    main()
