"""The report in a real browser: headless Chromium renders it, legibly and without errors.

Three looks at the same file:
- the command line ``--screenshot`` (with ``--enable-logging=stderr``: the report has no
  scripts, so any ``CONSOLE`` line in the log is a failure);
- ``--dump-dom``: the eight plots are in the DOM, each with a sized ``<svg>``;
- the DevTools protocol over ``--remote-debugging-pipe`` (file descriptors 3 and 4, NUL
  separated JSON: no websocket library needed) for leveled console messages, uncaught
  exceptions, failed loads, the laid-out size of every plot and a full-page screenshot.
A deliberately broken page checks that both error detectors do detect errors.

Skipped when Chromium is missing, except under ``CI=true``, where that is a failure.
The screenshots are copied to ``out/report-screenshot.png`` (1400x5000, the top of the
page) and ``out/report-fullpage.png`` to be looked at.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.report import write_report
from pipeline.report.example import example_report_data

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
OUT = Path(__file__).resolve().parents[2] / "out"
PLOTS = ["satisfaction", "drift", "histogram", "band_quality", "segments", "thresholds",
         "economics", "cohorts", "mdd", "alerts"]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]
TIMEOUT = 120

if not Path(CHROMIUM).exists():
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"chromium not found at {CHROMIUM} (CI=true)", pytrace=False)
    pytest.skip(f"chromium not found at {CHROMIUM}", allow_module_level=True)


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)


def _console_lines(stderr: str) -> list[str]:
    """Chromium logs every console message and uncaught exception as ``...:CONSOLE...``."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


# --- a minimal DevTools-protocol client over --remote-debugging-pipe ---------------------


@dataclass
class Cdp:
    """Chromium with the DevTools protocol on fds 3 (commands in) and 4 (replies out)."""

    pid: int
    to_browser: int
    from_browser: int
    events: list[dict[str, Any]] = field(default_factory=list)
    _buf: bytes = b""
    _next: int = 0

    @classmethod
    def launch(cls, profile: Path, log: Path) -> Cdp:
        cmd_r, cmd_w = os.pipe()
        out_r, out_w = os.pipe()
        log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        actions = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, log_fd, 1),
                   (os.POSIX_SPAWN_DUP2, log_fd, 2), (os.POSIX_SPAWN_DUP2, cmd_r, 3),
                   (os.POSIX_SPAWN_DUP2, out_w, 4)]
        argv = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
                "about:blank"]
        pid = os.posix_spawn(CHROMIUM, argv, dict(os.environ), file_actions=actions)
        for fd in (cmd_r, out_w, log_fd, null):
            os.close(fd)
        return cls(pid, cmd_w, out_r)

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_browser], [], [], left)[0]:
                raise TimeoutError("no message from chromium")
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed the pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        msg: dict[str, Any] = json.loads(raw)
        return msg

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send a command; return its result, keeping the events that arrive meanwhile."""
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self.to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """Wait for an event (or find it among those already received)."""
        for ev in self.events:
            if ev.get("method") == method:
                return ev
        deadline = time.monotonic() + timeout
        while True:
            ev = self._read_message(deadline)
            self.events.append(ev)
            if ev.get("method") == method:
                return ev

    def drain(self, seconds: float) -> None:
        """Collect events for a while (late console messages, failed loads)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.append(self._read_message(deadline))
        except TimeoutError:
            pass

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, TimeoutError, EOFError):
            self.send("Browser.close")
        for _ in range(100):
            if os.waitpid(self.pid, os.WNOHANG) != (0, 0):
                break
            time.sleep(0.1)
        else:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        os.close(self.to_browser)
        os.close(self.from_browser)

    def errors(self) -> list[str]:
        """Console errors/warnings/asserts, uncaught exceptions and error log entries."""
        out = []
        for ev in self.events:
            p = ev.get("params", {})
            if ev.get("method") == "Runtime.consoleAPICalled" and p.get("type") in (
                    "error", "warning", "assert"):
                out.append(f"console.{p['type']}: {[a.get('value') for a in p['args']]}")
            elif ev.get("method") == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails'].get('text')}")
            elif ev.get("method") == "Log.entryAdded" and p["entry"]["level"] in (
                    "error", "warning"):
                out.append(f"log.{p['entry']['level']}: {p['entry']['text']}")
        return out


PLOT_SIZES_JS = """JSON.stringify(Array.from(document.querySelectorAll('[data-plot]')).map(el => {
  const child = el.querySelector('svg, img');
  const r = child ? child.getBoundingClientRect() : {width: 0, height: 0};
  return {name: el.dataset.plot, child: child ? child.tagName.toLowerCase() : null,
          width: r.width, height: r.height, paths: el.querySelectorAll('path').length};
}))"""


@dataclass
class PageLook:
    errors: list[str]
    plots: list[dict[str, Any]]
    png: bytes
    links: list[str]


def _look(url: str, profile: Path, log: Path) -> PageLook:
    cdp = Cdp.launch(profile, log)
    try:
        target = cdp.send("Target.createTarget", url="about:blank")["targetId"]
        session = cdp.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            cdp.send(f"{domain}.enable", session)
        cdp.send("Emulation.setDeviceMetricsOverride", session, width=1400, height=1000,
                 deviceScaleFactor=1, mobile=False)
        cdp.send("Page.navigate", session, url=url)
        cdp.wait_for("Page.loadEventFired")
        cdp.drain(1.0)

        def evaluate(expr: str) -> Any:
            res = cdp.send("Runtime.evaluate", session, expression=expr, returnByValue=True)
            return res["result"]["value"]

        plots = json.loads(evaluate(PLOT_SIZES_JS))
        links = json.loads(evaluate("JSON.stringify(Array.from(document.querySelectorAll("
                                    "'table.alerts a.runbook')).map(a => a.href))"))
        height = int(evaluate("document.documentElement.scrollHeight"))
        cdp.send("Emulation.setDeviceMetricsOverride", session, width=1400, height=height,
                 deviceScaleFactor=1, mobile=False)
        png = base64.b64decode(cdp.send("Page.captureScreenshot", session, format="png")["data"])
        cdp.drain(0.3)
        return PageLook(cdp.errors(), plots, png, links)
    finally:
        cdp.close()


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(example_report_data(), tmp_path_factory.mktemp("report") / "report.html")


@pytest.fixture(scope="module")
def screenshot(report: Path, tmp_path_factory: pytest.TempPathFactory,
               ) -> Iterator[tuple[Path, str]]:
    tmp = tmp_path_factory.mktemp("shot")
    png = tmp / "report.png"
    run = _chromium(["--enable-logging=stderr", "--v=0", f"--screenshot={png}",
                     "--window-size=1400,5000", report.as_uri()], tmp / "profile")
    assert run.returncode == 0, run.stderr[-2000:]
    if png.exists():
        OUT.mkdir(exist_ok=True)
        shutil.copyfile(png, OUT / "report-screenshot.png")
    yield png, run.stderr


@pytest.fixture(scope="module")
def look(report: Path, tmp_path_factory: pytest.TempPathFactory) -> PageLook:
    tmp = tmp_path_factory.mktemp("cdp")
    result = _look(report.as_uri(), tmp / "profile", tmp / "chromium.log")
    OUT.mkdir(exist_ok=True)
    (OUT / "report-fullpage.png").write_bytes(result.png)
    return result


# --- tests ----------------------------------------------------------------------------


def test_render_is_byte_identical_across_processes(report: Path) -> None:
    code = ("import hashlib, sys; from pipeline.report import render_report; "
            "from pipeline.report.example import example_report_data; "
            "sys.stdout.write(hashlib.sha256(render_report(example_report_data())"
            ".encode()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300)
    assert out.stdout == hashlib.sha256(report.read_bytes()).hexdigest()


def test_screenshot_is_a_real_picture(screenshot: tuple[Path, str]) -> None:
    png, _ = screenshot
    assert png.exists() and png.stat().st_size > 100_000
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (1400, 5000)
        rgb = np.asarray(im.convert("RGB"), dtype=int).reshape(-1, 3)
    not_white = float(np.mean(rgb.min(axis=1) < 235))
    assert not_white > 0.05, f"only {not_white:.1%} of the page is not white"
    for name, ref in (("cheap-tier orange", (0xE8, 0x71, 0x0A)),
                      ("capable-tier blue", (0x2F, 0x6D, 0xB5))):
        near = int(np.sum(np.abs(rgb - np.array(ref)).sum(axis=1) < 60))
        assert near > 2000, f"only {near} pixels of {name}"


def test_no_console_output_in_the_log(screenshot: tuple[Path, str]) -> None:
    assert _console_lines(screenshot[1]) == []


class _PlotsInDom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.plots: dict[str, dict[str, str | None]] = {}
        self._current: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "data-plot" in a:
            self._current = a["data-plot"]
            self.plots[self._current or ""] = {}
        elif self._current and tag in ("svg", "img") and not self.plots[self._current]:
            self.plots[self._current] = {"tag": tag, **a}

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._current = None


def test_dumped_dom_has_every_plot_with_a_sized_svg(report: Path,
                                                    tmp_path: Path) -> None:
    run = _chromium(["--dump-dom", report.as_uri()], tmp_path / "profile")
    assert run.returncode == 0, run.stderr[-2000:]
    parser = _PlotsInDom()
    parser.feed(run.stdout)
    assert list(parser.plots) == PLOTS
    for name, svg in parser.plots.items():
        assert svg.get("tag") == "svg", name
        w, h = (float(v) for v in (svg.get("viewbox") or "0 0 0 0").split()[2:])
        assert w > 300 and h > 100, (name, w, h)


def test_devtools_sees_no_errors_and_laid_out_plots(look: PageLook) -> None:
    assert look.errors == []
    assert [p["name"] for p in look.plots] == PLOTS
    for p in look.plots:
        assert p["child"] == "svg", p
        assert p["width"] > 900 and p["height"] > 200, p
        assert p["paths"] > 20, p
    assert look.png.startswith(b"\x89PNG") and len(look.png) > 200_000


def test_runbook_links_resolve_next_to_the_report(look: PageLook, report: Path) -> None:
    expected = (report.parent.parent / "deploy" / "runbook.md").resolve().as_uri()
    assert look.links and all(link.startswith(expected + "#") for link in look.links)


def test_error_detectors_detect_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><img src='missing.png'><script>"
                   "console.error('boom'); nope();</script></body></html>")
    run = _chromium(["--enable-logging=stderr", "--v=0", f"--screenshot={tmp_path / 'b.png'}",
                     "--window-size=400,300", bad.as_uri()], tmp_path / "p1")
    lines = _console_lines(run.stderr)
    assert any("boom" in line for line in lines) and any("nope" in line for line in lines)
    errors = _look(bad.as_uri(), tmp_path / "p2", tmp_path / "chromium.log").errors
    assert any("console.error" in e and "boom" in e for e in errors), errors
    assert any(e.startswith("exception:") for e in errors), errors
    assert any("missing.png" in e or "ERR_FILE_NOT_FOUND" in e for e in errors), errors
