"""`make up`'s stack, headless: deploy/stack.sh up, Prometheus alerting on it, stack.sh down.

The stack runs on free ports in a temporary run directory, with 30 days of the Pareto-trap
simulation produced in a minute (see SIM_ARGS) and Prometheus scraping and evaluating
every 2 s. The alert rules keep their ``for: 1m``, so TierwatchParetoTrap fires
about a minute after the worker has flagged the trap; the whole test takes 2-3 minutes.

Without Prometheus (Debian's ``prometheus`` package) the Prometheus checks skip locally,
but fail under ``CI=true``, where ``deploy/system-deps.sh`` installs it. Without Java (for
the broker) or curl the test skips locally and fails under ``CI=true`` as well.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "deploy" / "stack.sh"
# Paced at 12 simulated hours a second (60 s for the 30 days), not --speedup 0: the worker's
# event-time watermark is shared by the routing and feedback topics, so a backlog lets the
# feedback topic (few, large batches) run days ahead and dead-letters most routing events
# as late; pareto_trap then does not fire. 0.03 events/s keeps a busy worker in step.
SIM_ARGS = "--days 30 --rate 0.03 --speedup 43200"
SERVICES = ("worker", "simulator", "prometheus")
UP_TIMEOUT = 180.0  # a first broker start may fetch the jars and record its CDS archive
SCRAPE_TIMEOUT = 120.0
FIRING_TIMEOUT = 240.0  # 60 s of traffic, processing, then the rules' `for: 1m`
CI = os.environ.get("CI") == "true"


def _missing(what: str) -> None:
    if CI:
        pytest.fail(f"{what} (CI=true: `make system-deps` installs it)", pytrace=False)
    pytest.skip(what)


def _free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _poll(what: str, probe: Callable[[], Any], timeout: float,
          logs: Callable[[], str]) -> Any:
    """The first truthy ``probe()`` within ``timeout`` seconds (errors count as falsy)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except (OSError, ValueError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout:.0f}s; last: {last!r}\n{logs()}")
        time.sleep(1.0)


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (None once the process is gone or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(") ", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


def _alive(pid: int, started: str | None = None) -> bool:
    now = _start_time(pid)
    return now is not None and (started is None or now == started)


def _pids_mentioning(needle: str) -> list[int]:
    """Live processes whose command line or working directory mentions ``needle``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if (needle in cmdline or cwd.startswith(needle)) and _alive(int(proc.name)):
            found.append(int(proc.name))
    return found


@contextlib.contextmanager
def _decoys() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes named like the stack's, in sessions of their own: `down` must spare them."""
    names = ["prometheus --config.file=decoy.yml", "tierwatch worker",
             "tierwatch simulate --scenario pareto-trap --kafka", "java kafka.Kafka decoy"]
    procs = [subprocess.Popen([name, "600"], executable="/bin/sleep", start_new_session=True)
             for name in names]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _stack(env: dict[str, str], command: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(STACK), command], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_stack_up_alerts_through_prometheus_and_down_stops_what_it_started(
        tmp_path: Path) -> None:
    for tool in ("curl", os.environ.get("JAVA", "java")):
        if shutil.which(tool) is None:
            _missing(f"`{tool}` is not installed: stack.sh cannot run the stack")
    prometheus = shutil.which(os.environ.get("PROMETHEUS", "prometheus"))
    if prometheus is None and CI:
        _missing("`prometheus` is not installed")
    tierwatch = Path(sys.executable).with_name("tierwatch")
    assert tierwatch.exists(), f"{tierwatch} not found: the package is not installed"

    run = tmp_path / "stack"
    kafka_port, controller_port, web_port, prom_port = _free_ports(4)
    # An outside cluster or tierwatch settings of the caller's would change the stack.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TIERWATCH_") and k not in ("KAFKA_BOOTSTRAP_SERVERS",)}
    env.update({
        "TIERWATCH_STACK_DIR": str(run),
        "TIERWATCH_STACK_SIM_ARGS": SIM_ARGS,
        "TIERWATCH": str(tierwatch),
        "KAFKA_PORT": str(kafka_port),
        "KAFKA_CONTROLLER_PORT": str(controller_port),
        "TIERWATCH_WEB_PORT": str(web_port),
        "PROMETHEUS_PORT": str(prom_port),
        "PROMETHEUS_INTERVAL": "2s",
        "PROMETHEUS": prometheus or "prometheus-not-installed",
    })
    worker = f"http://127.0.0.1:{web_port}"
    prom = f"http://127.0.0.1:{prom_port}"

    def worker_state() -> str:
        """The worker's watermark, firing alerts and event counts, for the record."""
        try:
            status = _get_json(f"{worker}/status")
            with urllib.request.urlopen(f"{worker}/metrics", timeout=5) as resp:
                metrics = resp.read().decode()
        except (OSError, ValueError) as exc:
            return f"worker: {exc!r}"
        lag = time.time() - (status.get("watermark") or 0)
        kinds = sorted(f"{a['kind']}/{a.get('tier') or '-'}"
                       for r in status.get("routers", {}).values() for a in r.get("firing", []))
        counts = [line for line in metrics.splitlines()
                  if line.startswith(("tierwatch_events_total", "tierwatch_dead_letters_total"))]
        return "\n".join([f"worker: watermark {lag / 3600:.1f}h ago; firing {kinds}", *counts])

    def logs() -> str:
        out = [worker_state()]
        for log in sorted(run.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-25:]
            out.append(f"---- {log.name}\n" + "\n".join(tail))
        return "\n".join(out)

    with _decoys() as decoys:
        stopped = False
        t0 = time.monotonic()
        try:
            up = _stack(env, "up", UP_TIMEOUT)
            assert up.returncode == 0, f"stack.sh up failed:\n{up.stdout}{up.stderr}\n{logs()}"
            print(f"\nstack.sh up: {time.monotonic() - t0:.0f}s")
            started = {name: (run / f"{name}.pid").read_text().split()
                       for name in SERVICES if (run / f"{name}.pid").exists()}
            assert {"worker", "simulator"} <= set(started), up.stdout
            kafka_pid = int((run / "kafka" / "kafka.pid").read_text())
            assert (prometheus is not None) == ("prometheus" in started), up.stdout
            firing: list[dict[str, Any]] = []
            if prometheus is not None:
                config = (run / "prometheus.yml").read_text()
                assert f'targets: ["127.0.0.1:{web_port}"]' in config
                assert "scrape_interval: 2s" in config

                def scraped() -> bool:
                    query = urllib.parse.quote('up{job="tierwatch"}')
                    result = _get_json(f"{prom}/api/v1/query?query={query}")["data"]["result"]
                    return any(r["value"][1] == "1" for r in result)

                _poll("Prometheus scraping the worker (up == 1)", scraped, SCRAPE_TIMEOUT, logs)
                print(f"up{{job=\"tierwatch\"}} == 1: {time.monotonic() - t0:.0f}s")

                def forwarded_firing() -> list[dict[str, Any]]:
                    # The tierwatch-alerts group: the worker's alerts, labelled by `kind`.
                    alerts = _get_json(f"{prom}/api/v1/alerts")["data"]["alerts"]
                    return [a for a in alerts if a["state"] == "firing"
                            and a["labels"]["alertname"].startswith("Tierwatch")
                            and "kind" in a["labels"]]

                def pareto_trap_firing() -> list[dict[str, Any]]:
                    alerts = forwarded_firing()
                    names = {a["labels"]["alertname"] for a in alerts}
                    return alerts if "TierwatchParetoTrap" in names else []

                def firing_logs() -> str:
                    try:
                        return f"firing: {forwarded_firing()!r}\n{logs()}"
                    except (OSError, ValueError, KeyError):
                        return logs()

                # Its siblings (drift, support contacts, feedback starvation) fire with it.
                firing = _poll("TierwatchParetoTrap firing in Prometheus", pareto_trap_firing,
                               FIRING_TIMEOUT, firing_logs)
                print(f"firing in Prometheus after {time.monotonic() - t0:.0f}s: "
                      + ", ".join(sorted({a['labels']['alertname'] for a in firing})))

            def worker_firing() -> dict[str, list[dict[str, Any]]]:
                routers = _get_json(f"{worker}/status")["routers"]
                return {r: v["firing"] for r, v in routers.items() if v.get("firing")}

            status = _poll("a firing alert in the worker's /status", worker_firing,
                           FIRING_TIMEOUT, logs)
            on_status = {(a["kind"], router, a.get("tier") or "")
                         for router, alerts in status.items() for a in alerts}
            for alert in firing:
                labels = alert["labels"]
                key = (labels["kind"], labels["router_id"], labels.get("tier", ""))
                assert key in on_status, f"Prometheus fires {key}; /status has {on_status}"

            print(worker_state())

            down = _stack(env, "down", 120)
            stopped = True
            assert down.returncode == 0, f"stack.sh down failed:\n{down.stdout}{down.stderr}"
            print(f"stack.sh down: done at {time.monotonic() - t0:.0f}s")
        finally:
            if not stopped:
                _stack(env, "down", 120)

        for name, (pid, start) in started.items():
            assert not _alive(int(pid), start), f"{name} (pid {pid}) still runs after down"
        assert not _alive(kafka_pid), f"the broker (pid {kafka_pid}) still runs after down"
        assert not _pids_mentioning(str(run)), "processes of the stack outlived down"
        for port in (kafka_port, web_port, prom_port):
            with socket.socket() as sock:
                assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
        # Nothing else: processes named like the stack's, started before it, still run.
        for decoy in decoys:
            assert decoy.poll() is None, f"down killed {decoy.args!r}"
        assert not list(run.glob("*.pid")), "down leaves pid files behind"

    if prometheus is None:
        pytest.skip("`prometheus` is not installed: the stack ran without it "
                    "(Debian: apt-get install prometheus)")
