"""The light router client (deploy/router-client/pyproject.toml): what a router imports pulls in
neither the worker's stack nor a tierwatch module the router wheel does not ship."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROUTER_PYPROJECT = REPO / "deploy" / "router-client" / "pyproject.toml"
HEAVY = ("faust", "mode", "aiokafka", "numpy", "scipy", "matplotlib", "pyarrow", "river",
         "tqdm", "prometheus_client")
# the distributions the router wheel depends on, by the modules they install
ALLOWED_THIRD_PARTY = {"pydantic", "pydantic_core", "pydantic_settings", "kafka", "orjson",
                       "typing_extensions", "annotated_types", "typing_inspection", "dotenv",
                       "rfc8785"}

PROBE = """
import json, sys
import pipeline.control as control
import pipeline.kafka_clients, pipeline.acls
# what a router uses, exercised (not only imported): a subscriber and a decision
from pipeline.core.signing import Keyring, new_key
from pipeline.schemas import Thresholds
from pipeline.settings import Settings
t = Thresholds(cheap_above=0.7, capable_below=0.5, exploration_rate=0.1)
control.decide(0.6, t, 0.05)
sub = control.ThresholdSubscriber(Settings(), "r", Keyring({"k": bytes.fromhex(new_key())}),
                                  control.Bounds(), t)
sub.offer(b"{}")
pipeline.kafka_clients.client_kwargs(Settings())
print(json.dumps(sorted(sys.modules)))
"""


def _router_config() -> dict[str, list[str]]:
    doc = tomllib.loads(ROUTER_PYPROJECT.read_text())
    return {"modules": doc["tool"]["setuptools"]["py-modules"],
            "dependencies": doc["project"]["dependencies"]}


def _imported() -> list[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=True)
    return list(json.loads(proc.stdout.splitlines()[-1]))


def test_the_router_side_imports_no_worker_dependency() -> None:
    imported = _imported()
    assert "pipeline.control" in imported  # the probe did run
    heavy = sorted({m.split(".")[0] for m in imported} & set(HEAVY))
    assert heavy == [], f"the router client imports {heavy}"
    # private names are the interpreter's and the editable install's, not a dependency
    third_party = {m.split(".")[0] for m in imported if not m.startswith("_")} - set(
        sys.stdlib_module_names) - {"pipeline"}
    assert third_party <= ALLOWED_THIRD_PARTY, sorted(third_party - ALLOWED_THIRD_PARTY)


def test_the_router_wheel_ships_every_module_the_router_imports() -> None:
    config = _router_config()
    shipped = set(config["modules"])
    packages = {m.rsplit(".", 1)[0] for m in shipped}
    needed = {m for m in _imported() if m == "pipeline" or m.startswith("pipeline.")}
    missing = needed - shipped - packages
    assert not missing, f"deploy/router-client/pyproject.toml lacks {sorted(missing)}"
    for module in shipped:
        assert (REPO / (module.replace(".", "/") + ".py")).is_file(), module


def test_the_router_wheel_has_ranges_not_the_worker_pins() -> None:
    deps = _router_config()["dependencies"]
    names = {d.split(">")[0].split("=")[0].split("<")[0].strip() for d in deps}
    assert names == {"pydantic", "pydantic-settings", "kafka-python", "orjson", "rfc8785"}
    assert not any("==" in d for d in deps)
    worker = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert all("==" in d for d in worker)  # the worker keeps its exact pins
