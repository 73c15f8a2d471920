"""The published signing vectors verify in Python and, with no tierwatch code, in Node;
Python's RFC 8785 numbers and strings agree with ECMAScript's own on random input."""

from __future__ import annotations

import json
import random
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.control import Bounds, ThresholdSubscriber
from pipeline.core.signing import Keyring, canonical_json
from pipeline.schemas import ThresholdRecommendation, Thresholds
from tests.contract import vectors

HERE = Path(__file__).parent
VERIFY = HERE / "verify.mjs"
PUBLISHED: dict[str, Any] = json.loads(vectors.PATH.read_text())
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed")


def test_published_vectors_are_what_the_code_produces() -> None:
    assert vectors.PATH.read_text() == vectors.text(), \
        "schemas/signing-test-vectors.json is stale: python -m tests.contract.vectors"


def test_vectors_cover_what_serializers_disagree_on() -> None:
    canon = {v["name"]: v["canonical"] for v in PUBLISHED["vectors"]}
    assert '"cost_per_day_usd":10,' in canon["worker-message"]          # 10.0 → 10
    assert "1e-7" in canon["numbers"] and "1e+21" in canon["numbers"]
    assert "100000000000000000000" in canon["numbers"]                  # 1e20 → digits
    # U+1F600 sorts before U+FB33 by UTF-16 code units, after it by code points
    assert canon["strings"].index("\U0001F600") < canon["strings"].index("\ufb33")
    assert len({v["signature"] for v in PUBLISHED["vectors"]}) == 3     # 2 share content


@pytest.mark.parametrize("vector", PUBLISHED["vectors"], ids=lambda v: v["name"])
def test_vector_verifies_in_python(vector: dict[str, Any]) -> None:
    ring = Keyring({vector["key_id"]: bytes.fromhex(vector["key_hex"])})
    doc = json.loads(vector["message"])
    assert canonical_json(doc).decode() == vector["canonical"]
    assert ring.verify(vector["key_id"], doc, vector["signature"])
    # the router-side subscriber applies it (it verifies the parsed model's dump)
    rec = ThresholdRecommendation.model_validate(doc)
    sub = ThresholdSubscriber("127.0.0.1:1", rec.router_id, ring, Bounds(),
                              Thresholds(cheap_above=0.9, capable_below=0.8),
                              clock=lambda: rec.issued_at.timestamp())
    sub.mark_contact()
    assert sub.offer(vector["message"].encode()) == "applied"
    tampered = {**doc, "seq": doc["seq"] + 1}
    assert not ring.verify(vector["key_id"], tampered, vector["signature"])


def node(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert NODE is not None
    return subprocess.run([NODE, *args], input=stdin, capture_output=True, text=True,
                          timeout=60, check=False)


@needs_node
def test_vectors_verify_in_node_without_tierwatch_code() -> None:
    run = node(str(VERIFY), str(vectors.PATH))
    assert run.returncode == 0, run.stdout + run.stderr
    n = len(PUBLISHED["vectors"])
    assert f"{n}/{n} vectors verify" in run.stdout


@needs_node
def test_node_verifier_rejects_a_tampered_message(tmp_path: Path) -> None:
    doc = json.loads(json.dumps(PUBLISHED))
    first = doc["vectors"][0]
    message = json.loads(first["message"])
    message["thresholds"]["cheap_above"] = 0.3
    first["message"] = json.dumps(message)
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(doc))
    run = node(str(VERIFY), str(path))
    assert run.returncode == 1
    assert "FAIL worker-message" in run.stdout and "signature does not verify" in run.stdout


ECMASCRIPT_ORACLE = """
// numbers and strings as JSON.stringify writes them; keys by Array.prototype.sort, i.e.
// by UTF-16 code units (not JSON.stringify of an object: it puts integer-like keys first)
const c = (v) => v === null || typeof v !== "object" ? JSON.stringify(v)
  : `{${Object.keys(v).sort().map((k) => JSON.stringify(k) + ":" + c(v[k])).join(",")}}`;
const lines = require("fs").readFileSync(0, "utf8").trim().split("\\n");
process.stdout.write(lines.map((l) => c(JSON.parse(l))).join("\\n"));
"""


def random_doubles(rng: random.Random, n: int) -> list[float]:
    """Finite doubles from random bit patterns (every exponent), plus decimal-looking ones."""
    out: list[float] = []
    while len(out) < n:
        (x,) = struct.unpack(">d", rng.getrandbits(64).to_bytes(8, "big"))
        if x == x and abs(x) != float("inf"):
            out.append(x)
        out.append(round(rng.uniform(-1e6, 1e6), rng.randint(0, 9)))
        out.append(rng.randint(-10**6, 10**6) * 10.0 ** rng.randint(-30, 30))
    return out[:n]


def random_text(rng: random.Random) -> str:
    planes = [(0, 0x7F), (0x80, 0x7FF), (0x800, 0xD7FF), (0xE000, 0xFFFF), (0x10000, 0x10FFFF)]
    chars = []
    for _ in range(rng.randint(0, 8)):
        lo, hi = rng.choice(planes)
        chars.append(chr(rng.randint(lo, hi)))
    return "".join(chars)


@needs_node
def test_jcs_agrees_with_ecmascript_on_random_numbers_strings_and_key_orders() -> None:
    """ECMAScript is JCS's definition: Node's JSON.stringify is the oracle."""
    rng = random.Random(8785)
    docs = [{"n": x} for x in random_doubles(rng, 3000)]
    docs += [{random_text(rng): random_text(rng) for _ in range(5)} for _ in range(500)]
    stdin = "\n".join(orjson.dumps(d).decode() for d in docs)
    run = node("-e", ECMASCRIPT_ORACLE, stdin=stdin)
    assert run.returncode == 0, run.stderr
    expected = run.stdout.split("\n")
    assert len(expected) == len(docs)
    mismatches = [(d, e) for d, e in zip(docs, expected, strict=True)
                  if canonical_json(d).decode() != e]
    assert mismatches == []
