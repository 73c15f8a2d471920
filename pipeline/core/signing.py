"""HMAC-SHA256 signatures over RFC 8785 canonical JSON, with key ids so keys can be rotated.

The signed bytes are the JSON Canonicalization Scheme (JCS, RFC 8785) form of the payload
without its ``signature`` member: keys sorted by UTF-16 code units, no whitespace,
strings escaped as ECMAScript's ``JSON.stringify`` escapes them, numbers written as
ECMAScript writes them (``10.0`` is ``10``, ``1e-07`` is ``1e-7``), UTF-8. Any language
can reproduce it from the message it received: parse the JSON, drop ``signature``,
canonicalize, HMAC. ``schemas/signing-test-vectors.json`` holds published vectors.

>>> canonical_json({"b": 10.0, "a": [1e-7, 1e21], "signature": "x"})
b'{"a":[1e-7,1e+21],"b":10}'
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

import rfc8785

MIN_KEY_BYTES = 16


def canonical_json(payload: Mapping[str, Any]) -> bytes:
    """RFC 8785 (JCS) bytes of ``payload`` minus its ``signature`` member.

    Raises ``ValueError`` for what JCS cannot carry: NaN, infinities, integers outside
    ±(2**53 - 1) and non-string keys.
    """
    body = {k: v for k, v in payload.items() if k != "signature"}
    try:
        return rfc8785.dumps(body)
    except rfc8785.CanonicalizationError as err:  # a ValueError subclass, made explicit
        raise ValueError(f"not canonicalizable per RFC 8785: {err}") from err


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
        """Lower-case hex HMAC-SHA256 of ``canonical_json(payload)`` under ``key_id``."""
        return hmac.new(self.keys[key_id], canonical_json(payload), hashlib.sha256).hexdigest()

    def verify(self, key_id: str, payload: Mapping[str, Any], signature: str) -> bool:
        """True when ``signature`` is this key's signature of ``payload``.

        A payload JCS cannot canonicalize (NaN, a huge integer) was never signed: False.
        """
        if key_id not in self.keys:
            return False
        try:
            expected = self.sign(key_id, payload)
        except ValueError:
            return False
        return hmac.compare_digest(expected, signature)
