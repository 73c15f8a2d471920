"""HMAC-SHA256 signatures over canonical JSON, with key ids so keys can be rotated.

Canonical JSON: the payload without ``signature``, keys sorted, no whitespace, UTF-8,
timestamps as the model serializes them. Both sides compute it from the parsed model,
so a producer's formatting can never make a valid message fail or a forged one pass.

>>> ring = Keyring({"k1": b"0123456789abcdef0123456789abcdef"})
>>> sig = ring.sign("k1", {"router_id": "r", "seq": 1})
>>> ring.verify("k1", {"router_id": "r", "seq": 1}, sig)
True
>>> ring.verify("k1", {"router_id": "r", "seq": 2}, sig)
False
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any

import orjson

MIN_KEY_BYTES = 16


def canonical_json(payload: Mapping[str, Any]) -> bytes:
    """Sorted-key, compact JSON of ``payload`` minus its ``signature`` field."""
    body = {k: v for k, v in payload.items() if k != "signature"}
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def parse_key(text: str) -> bytes:
    """A key from config: hex when it parses as hex, else the UTF-8 bytes of the text."""
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = text.encode()
    if len(key) < MIN_KEY_BYTES:
        # A short HMAC key is guessable; refuse rather than sign with it.
        raise ValueError(f"signing keys need at least {MIN_KEY_BYTES} bytes")
    return key


def new_key() -> str:
    """A fresh 256-bit key, hex-encoded (``tierwatch control keygen``)."""
    return secrets.token_hex(32)


class Keyring:
    """Signing/verification keys by ``key_id``."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        for key_id, key in keys.items():
            if len(key) < MIN_KEY_BYTES:
                raise ValueError(f"key {key_id!r} is shorter than {MIN_KEY_BYTES} bytes")
        self.keys = dict(keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self.keys

    def sign(self, key_id: str, payload: Mapping[str, Any]) -> str:
        return hmac.new(self.keys[key_id], canonical_json(payload), hashlib.sha256).hexdigest()

    def verify(self, key_id: str, payload: Mapping[str, Any], signature: str) -> bool:
        """True when ``signature`` is this key's signature of ``payload``."""
        if key_id not in self.keys:
            return False
        return hmac.compare_digest(self.sign(key_id, payload), signature)
