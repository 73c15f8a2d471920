"""A second worker in the consumer group is detected, not silently tolerated.

Until the two-stage scale-out exists, one worker must hold every input partition: two
workers in one group would each count part of every router. Each says so on /metrics
(``tierwatch_input_partitions_missing``), which ``TierwatchPartialAssignment`` pages on;
once the second leaves, the first holds everything again and reports none missing.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.settings import Settings
from pipeline.topics import create_topics
from tests.integration.worker_proc import http_get, running_worker

pytestmark = pytest.mark.kafka


def missing(base: str) -> dict[str, float]:
    """``tierwatch_input_partitions_missing`` by topic, as the worker exposes it."""
    text = http_get(base + "/metrics").decode()
    return {s.labels["topic"]: s.value for f in text_string_to_metric_families(text)
            if f.name == "tierwatch_input_partitions_missing" for s in f.samples}


def wait_for(base: str, *, some: bool, timeout: float = 90.0) -> dict[str, float]:
    """Poll until the worker reports some partitions missing (or, every topic, none)."""
    deadline = time.monotonic() + timeout
    got: dict[str, float] = {}
    while time.monotonic() < deadline:
        got = missing(base)
        if got and any(got.values()) == some:
            return got
        time.sleep(1.0)
    raise AssertionError(f"{base}: wanted {'some' if some else 'no'} missing, got {got}")


def test_a_second_worker_in_the_group_is_reported_by_both(kafka_bootstrap: str,
                                                          tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}.tierwatch"
    create_topics(Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix,
                           partitions=4))
    env = {"TIERWATCH_BOOTSTRAP_SERVERS": kafka_bootstrap, "TIERWATCH_TOPIC_PREFIX": prefix,
           "TIERWATCH_APP_ID": f"{prefix}-worker", "TIERWATCH_SESSION_TIMEOUT_S": "10"}
    first = {**env, "TIERWATCH_CHECKPOINT_DIR": str(tmp_path / "a")}
    second = {**env, "TIERWATCH_CHECKPOINT_DIR": str(tmp_path / "b")}
    with running_worker(first, tmp_path / "a.log") as (_, a):
        assert wait_for(a, some=False) == {"routing": 0, "feedback": 0, "baselines": 0}
        with running_worker(second, tmp_path / "b.log") as (_, b):
            split_a, split_b = wait_for(a, some=True), wait_for(b, some=True)
            # together they hold each partition once: 4 + 4 + 1 of them
            assert sum(split_a.values()) + sum(split_b.values()) == 9, (split_a, split_b)
        # the second left the group: the first holds every partition again
        assert wait_for(a, some=False) == {"routing": 0, "feedback": 0, "baselines": 0}
    assert "another worker shares the consumer group" in (tmp_path / "a.log").read_text()
