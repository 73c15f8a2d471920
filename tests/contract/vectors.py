"""The published signing test vectors (``schemas/signing-test-vectors.json``).

Each vector is a control message as a router receives it, the key that signed it, the
RFC 8785 canonical form of the message without its ``signature`` and that signature.
The messages are real ``ThresholdRecommendation``s, chosen to exercise what differs
between JSON serializers: integral floats (``0.0``, ``10.0``), exponents (``1e-7``,
``1e21``), the shortest round-trip digits, key order by UTF-16 code units (an emoji
against U+FB33), and string escapes. Regenerate with
``.venv/bin/python -m tests.contract.vectors``; the tests fail when the file and this
generator disagree, because a published vector must never change silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson

from pipeline.core.signing import Keyring, canonical_json
from pipeline.schemas import ThresholdRecommendation

PATH = Path(__file__).parents[2] / "schemas" / "signing-test-vectors.json"
#: published test keys: never use them for anything else
KEY_A = bytes(range(32))
KEY_B = b"tierwatch test vector key, text form"

ALGORITHM = ("signature = lower-case hex HMAC-SHA256(key, JCS(message without its "
             "\"signature\" member)); JCS is RFC 8785, the UTF-8 bytes are signed")


def _recommendation(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema_version": "1", "router_id": "support", "seq": 42,
        "issued_at": "2026-05-01T12:00:00Z", "valid_until": "2026-05-08T12:00:00Z",
        "mode": "enforce",
        "thresholds": {"cheap_above": 0.65, "capable_below": 0.55, "exploration_rate": 0.1},
        "previous": {"cheap_above": 0.6, "capable_below": 0.5, "exploration_rate": 0.0},
        "reasons": ["cheap_above 0.600 → 0.650 toward target 0.700"],
        "evidence": {"target": 0.7, "drift_firing": False,
                     "bands": [{"lo": 0.6, "hi": 0.7, "gap": 0.01, "n": 1250}]},
        "expected_impact": {"cost_per_day_usd": 10.0, "cost_change_per_day_usd": -1.25,
                            "cheap_share": 0.5, "quality_change": 0.001},
        "baseline_version": "b1", "key_id": "k1", "signature": "0" * 64,
    }
    doc.update(over)
    return doc


def _signed(key_id: str, key: bytes, doc: dict[str, Any]) -> dict[str, Any]:
    """The recommendation as the worker publishes it: validated, dumped, signed."""
    unsigned = ThresholdRecommendation.model_validate({**doc, "key_id": key_id})
    body = unsigned.model_dump(mode="json", exclude_none=True)
    return {**body, "signature": Keyring({key_id: key}).sign(key_id, body)}


def _vector(name: str, about: str, key_id: str, key: bytes, message: bytes) -> dict[str, Any]:
    doc = orjson.loads(message)
    return {"name": name, "about": about, "key_id": key_id, "key_hex": key.hex(),
            "message": message.decode(), "canonical": canonical_json(doc).decode(),
            "signature": doc["signature"]}


def vectors() -> dict[str, Any]:
    """The whole published document."""
    worker = _signed("k1", KEY_A, _recommendation())
    numbers = _signed("k1", KEY_A, _recommendation(
        seq=43, evidence={"numbers": [333333333.3333333, 1e30, 4.5, 0.002, 1e-27, 1e-7, 1e21,
                                      1e20, -0.0, 5e-324, 1.7976931348623157e308,
                                      9007199254740991, 0.1, 100.0]},
        expected_impact={"cost_per_day_usd": 0.0, "cost_change_per_day_usd": 0.0,
                         "cheap_share": 1.0, "quality_change": -0.0}))
    strings = _signed("k2", KEY_B, _recommendation(
        seq=44, reasons=["€$\u000f\nA'B\"\\\"/", "line\u2028separator", "tab\there"],
        evidence={"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Dalet",
                  "1": "One", "\U0001F600": "Emoji", "\u0080": "Control",
                  "\u00f6": "o with diaeresis"}))
    # the same content as another producer could format it: indented, keys reversed,
    # numbers and characters spelled differently; the canonical form does not change
    reformatted = json.dumps(dict(reversed(list(worker.items()))), indent=2,
                             ensure_ascii=True).replace("10.0", "1.0E1").encode()
    return {
        "about": "Signing test vectors for tierwatch control messages "
                 "(ThresholdRecommendation v1). The keys are public test keys.",
        "algorithm": ALGORITHM,
        "vectors": [
            _vector("worker-message", "a recommendation exactly as the worker publishes it",
                    "k1", KEY_A, orjson.dumps(worker, option=orjson.OPT_SORT_KEYS)),
            _vector("reformatted", "the first message indented, its keys reversed, "
                    "10.0 spelled 1.0E1 and non-ASCII escaped: same canonical form, same "
                    "signature", "k1", KEY_A, reformatted),
            _vector("numbers", "ECMAScript number serialization: integral floats, "
                    "exponents, negative zero, the extremes of binary64", "k1", KEY_A,
                    orjson.dumps(numbers, option=orjson.OPT_SORT_KEYS)),
            _vector("strings", "key order by UTF-16 code units and JSON string escapes; a "
                    "text key (its UTF-8 bytes)", "k2", KEY_B,
                    orjson.dumps(strings, option=orjson.OPT_SORT_KEYS)),
        ],
    }


def text() -> str:
    return json.dumps(vectors(), indent=2) + "\n"


if __name__ == "__main__":
    PATH.write_text(text())
    print(f"wrote {PATH}")
