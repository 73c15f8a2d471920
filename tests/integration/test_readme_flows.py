"""The README's own flows, run as written against the test broker.

Every ``bash`` block of README.md's "Running against an existing Kafka cluster" and
"Auditing logs" sections is read from the README at test time (so the test follows the
README as it is edited) and each command runs through bash in a scratch directory that
holds what a user would have there: ``training_scores.parquet``, ``routing.jsonl.gz``,
``feedback.jsonl.gz`` and a ``.venv/bin/tierwatch``. Two things are adapted to the test
environment, nothing else:

- the cluster address a block exports (``KAFKA_BOOTSTRAP_SERVERS``) is replaced by the
  test broker's, and ``--replication-factor N`` becomes 1 (the test broker is one node);
- the environment gives this run its own topic prefix, consumer group and web port, so it
  cannot meet another test's topics or worker.

The worker command runs until the test has seen ``/status`` report the published baseline
and the commands after it have run; then it is stopped.
"""

from __future__ import annotations

import gzip
import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest

from pipeline.schemas import Baseline
from tests.integration.worker_proc import eventually, free_port, http_get

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SECTIONS = ("Running against an existing Kafka cluster", "Auditing logs")
ROUTER = "support"


# ---------------------------------------------------------------- reading the README
def readme_blocks(text: str, sections: tuple[str, ...] = SECTIONS,
                  languages: tuple[str, ...] = ("bash", "sh", "shell")) -> list[str]:
    """The fenced blocks in ``languages`` under headings that start with one of ``sections``.

    >>> readme_blocks("## Auditing logs\\n```bash\\nls\\n```\\n## Other\\n```bash\\npwd\\n```\\n")
    ['ls\\n']
    """
    blocks, inside, fence = [], False, None
    body: list[str] = []
    for line in text.splitlines(keepends=True):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if fence is None and heading:
            inside = heading.group(1).startswith(sections)
        elif fence is None and line.startswith("```"):
            fence, body = line.strip()[3:].strip(), []
        elif fence is not None and line.startswith("```"):
            if inside and fence in languages:
                blocks.append("".join(body))
            fence = None
        elif fence is not None:
            body.append(line)
    return blocks


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, blank and comment lines dropped.

    >>> commands("a \\\\\\n  b   # note\\n\\n# only a comment\\nc\\n")
    ['a b   # note', 'c']
    """
    out, current = [], ""
    for line in block.splitlines():
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1].rstrip() + " "
            continue
        current += line.strip()
        if current and not current.startswith("#"):
            out.append(current)
        current = ""
    return out


def words(command: str) -> list[str]:
    return shlex.split(command, comments=True)


def is_worker(command: str) -> bool:
    w = words(command)
    return len(w) >= 2 and w[0].endswith("tierwatch") and w[1] == "worker"


# ---------------------------------------------------------------- the user's directory
@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the README assumes is at hand: the venv's tierwatch and the user's data."""
    from pipeline.demo import simulate

    d = tmp_path_factory.mktemp("readme")
    (d / ".venv" / "bin").mkdir(parents=True)
    (d / ".venv" / "bin" / "tierwatch").symlink_to(Path(sys.executable).with_name("tierwatch"))
    sim = d.parent / f"{d.name}-sim"
    routing, feedback, _, _ = simulate("pareto-trap", sim, days=4, rate=0.05, seed=5,
                                       gzip=True)
    scores: list[float] = []
    ood: list[float] = []
    for name, src in (("routing.jsonl.gz", routing), ("feedback.jsonl.gz", feedback)):
        lines = []
        for line in gzip.decompress(src.read_bytes()).splitlines():
            event = orjson.loads(line)
            if "router_id" in event:
                event["router_id"] = ROUTER  # the README's router
            if name.startswith("routing") and len(scores) < 20_000:
                scores.append(event["score"])
                ood.append((event.get("signals") or {}).get("ood_distance", np.nan))
            lines.append(orjson.dumps(event))
        (d / name).write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"score": scores,
                             "ood_distance": pa.array(ood, from_pandas=True)}),
                   d / "training_scores.parquet")
    return d


# ---------------------------------------------------------------- running a block
class Session:
    """Runs commands through bash with one environment, as a terminal session would."""

    def __init__(self, cwd: Path, env: dict[str, str], bootstrap: str) -> None:
        self.cwd, self.env, self.bootstrap = cwd, env, bootstrap
        self.outputs: dict[str, subprocess.CompletedProcess[str]] = {}
        self.worker: subprocess.Popen[bytes] | None = None
        self.worker_baselines: dict[str, str] = {}

    def adapt(self, command: str) -> str:
        return re.sub(r"--replication-factor\s+\d+", "--replication-factor 1", command)

    def run(self, command: str) -> None:
        command = self.adapt(command)
        if is_worker(command):
            self.start_worker(command)
            return
        script = f"set -eo pipefail\n{command}\nenv -0 > {shlex.quote(str(self.cwd / '.env'))}"
        proc = subprocess.run(["bash", "-c", script], cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, f"`{command}` failed ({proc.returncode}):\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, f"`{command}`:\n{proc.stderr}"
        self.outputs[command] = proc
        env = dict(kv.split("=", 1) for kv in
                   (self.cwd / ".env").read_text().split("\0") if "=" in kv)
        if "KAFKA_BOOTSTRAP_SERVERS" in env:  # the README's cluster → the test broker
            env["KAFKA_BOOTSTRAP_SERVERS"] = self.bootstrap
        self.env = env

    def start_worker(self, command: str) -> None:
        log = (self.cwd / "worker.log").open("wb")
        self.worker = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=self.cwd,
                                       env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        url = f"http://127.0.0.1:{self.env['TIERWATCH_WEB_PORT']}/status"

        def baseline_seen() -> dict[str, str] | None:
            assert self.worker is not None and self.worker.poll() is None, \
                (self.cwd / "worker.log").read_text()[-3000:]
            try:
                status = orjson.loads(http_get(url, timeout=2))
            except OSError:
                return None
            baselines: dict[str, str] = status.get("baselines") or {}
            return baselines if ROUTER in baselines else None

        self.worker_baselines = eventually(baseline_seen, "the worker's /status to show the "
                                           "published baseline", timeout=180, every=0.5)

    def stop(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            os.killpg(self.worker.pid, signal.SIGTERM)
            try:
                self.worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, signal.SIGKILL)
                self.worker.wait()

    def output(self, *argv: str) -> str:
        """stdout of the command whose words include ``argv`` in order."""
        for command, proc in self.outputs.items():
            w = " ".join(words(command))
            if " ".join(argv) in w:
                return proc.stdout
        raise AssertionError(f"no command with {argv} ran")


@pytest.fixture
def session(workdir: Path, kafka_bootstrap: str) -> Iterator[Session]:
    run = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TIERWATCH_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                "TIERWATCH_TOPIC_PREFIX": f"readme{run}", "TIERWATCH_APP_ID": f"readme-{run}",
                "TIERWATCH_WEB_PORT": str(free_port()),
                "TIERWATCH_CONNECT_TIMEOUT_S": "30"})
    s = Session(workdir, env, kafka_bootstrap)
    try:
        yield s
    finally:
        s.stop()


def test_the_readme_sections_have_the_commands_this_test_checks() -> None:
    ran = [" ".join(words(c)[1:3]) for b in readme_blocks(README.read_text())
           for c in commands(b) if words(c) and words(c)[0].endswith("tierwatch")]
    for expected in ("topics create", "baseline fit", "baseline publish", "worker",
                     "status", "replay --routing"):
        assert any(r.startswith(expected.split()[0]) and expected.split()[-1] in r
                   for r in ran), f"README no longer runs `tierwatch {expected}`: {ran}"


def test_the_readme_flows_run_as_written(session: Session, workdir: Path,
                                         kafka_bootstrap: str) -> None:
    blocks = readme_blocks(README.read_text())
    assert blocks, "no bash block in the README's sections"
    for block in blocks:
        for command in commands(block):
            session.run(command)
    session.stop()

    # the key the README exports is a fresh one, not the dev default
    assert re.fullmatch(r"[0-9a-f]{64}", session.env["TIERWATCH_CONTROL_KEY"])
    prefix = session.env["TIERWATCH_TOPIC_PREFIX"]
    created = session.output("topics", "create")
    assert f"{prefix}.routing\tcreated" in created and f"{prefix}.control\tcreated" in created

    baseline = Baseline.model_validate_json((workdir / "baseline.json").read_text())
    assert baseline.router_id == ROUTER and set(baseline.signals) == {"ood_distance"}
    assert "published 1 baseline(s)" in session.output("baseline", "publish")
    # the worker took the file's baseline from the topic, and `status` says so
    assert session.worker_baselines[ROUTER] == baseline.version
    assert f"router {ROUTER}" in session.output("status")
    assert baseline.version in session.output("status")

    # the audit: every output file, the report, and a summary a person can read
    audit = workdir / "out" / "audit"
    for name in ("alerts.jsonl", "control.jsonl", "review.jsonl", "dlq.jsonl", "report.html"):
        assert (audit / name).is_file(), name
    summary = session.output("replay", "--routing")
    assert re.search(r"^[\d,]+ events in [\d.]+s", summary, re.M), summary
    assert f"routers: {ROUTER} (" in summary
    replayed = orjson.loads((audit / "summary.json").read_bytes())
    assert replayed["routers"][ROUTER]["router_id"] == ROUTER


# ---------------------------------------------------------------- the router's example
ROUTER_SECTION = ("Emitting events and applying recommendations",)
ROUTER_PRELUDE = '''
class classifier:
    @staticmethod
    def simple_probability(query):
        return 0.97 if "easy" in query else 0.3

class _Model:
    def __init__(self, tier):
        self.tier = tier
    def answer(self, query):
        return f"{self.tier}: {query}"

models = {"cheap": _Model("cheap"), "capable": _Model("capable")}

def price(tier, query):
    return 0.001 if tier == "cheap" else 0.02
'''


def test_the_readme_router_example_runs_as_written(kafka_bootstrap: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The router snippet, with only its two file paths pointed into a scratch directory
    (and a stand-in classifier, models and price): its events reach the routing topic
    without an explicit flush, and a signed recommendation inside its bounds is applied.
    """
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.partitioner.default import murmur2

    from pipeline.core.signing import Keyring, new_key
    from pipeline.schemas import RoutingEvent, Thresholds
    from pipeline.settings import Settings
    from pipeline.stream.processor import encode
    from pipeline.topics import create_topics
    from tests.integration.test_control_security import recommendation

    (block,) = readme_blocks(README.read_text(), ROUTER_SECTION, ("python",))
    key = new_key()
    (tmp_path / "tierwatch.key").write_text(key + "\n")
    for path in ("/etc/router/tierwatch.key", "/var/lib/router/tierwatch-control.json"):
        assert path in block, f"the README's router example no longer reads {path}"
    code = (block.replace("/etc/router/tierwatch.key", str(tmp_path / "tierwatch.key"))
            .replace("/var/lib/router/", f"{tmp_path}/"))
    prefix = f"r{uuid.uuid4().hex[:8]}.tierwatch"
    for name in [k for k in os.environ if k.startswith("TIERWATCH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("TIERWATCH_TOPIC_PREFIX", prefix)
    settings = Settings()
    create_topics(settings)

    scope: dict[str, object] = {}
    exec(compile(ROUTER_PRELUDE + code, "README.md", "exec"), scope)
    thresholds, emitter = scope["thresholds"], scope["emitter"]
    try:
        answers = [scope["handle"](f"q{i}", "easy one" if i % 2 else "hard one")  # type: ignore[operator]
                   for i in range(6)]
        # SAFE favours the capable tier: 0.97 is above its cheap_above, 0.3 is not
        assert answers[:2] == ["capable: hard one", "cheap: easy one"]

        consumer = KafkaConsumer(settings.topic("routing"), bootstrap_servers=kafka_bootstrap,
                                 auto_offset_reset="earliest", consumer_timeout_ms=15_000)
        seen: list[RoutingEvent] = []
        partitions = len(consumer.partitions_for_topic(settings.topic("routing")) or ())
        for message in consumer:  # no flush: the emitter's linger sends the last batch
            events = [RoutingEvent.model_validate(e) for e in orjson.loads(message.value)]
            for e in events:  # each where its own request_id (and its feedback) goes
                expected = (murmur2(e.request_id.encode()) & 0x7FFFFFFF) % partitions
                assert message.partition == expected, (e.request_id, message.partition)
            seen += events
            if len(seen) >= 6:
                break
        consumer.close()
        assert partitions > 1, "the test topic should have partitions to split over"
        assert sorted(e.request_id for e in seen) == [f"q{i}" for i in range(6)]
        assert {e.router_id for e in seen} == {ROUTER}

        # a recommendation signed with the router's key, inside its bounds, is applied
        ring = Keyring({"k1": bytes.fromhex(key)})
        wanted = Thresholds(cheap_above=0.7, capable_below=0.6, exploration_rate=0.1)
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        producer.send(settings.topic("control"), key=ROUTER.encode(),
                      value=encode(recommendation(seq=1, thresholds=wanted, ring=ring))
                      ).get(timeout=30)
        producer.close()
        applied = eventually(lambda: thresholds.applied, "the recommendation applied",  # type: ignore[attr-defined]
                             timeout=30)
        assert applied.thresholds == wanted
        assert thresholds.current() == wanted  # type: ignore[attr-defined]
        assert (tmp_path / "tierwatch-control.json").is_file()
    finally:
        emitter.close()  # type: ignore[attr-defined]
        thresholds.stop()  # type: ignore[attr-defined]
