"""OAUTHBEARER token providers for the secured test broker, named by
``TIERWATCH_SASL_OAUTH_TOKEN_PROVIDER=tests.integration.oauth_tokens:<user>``.

The test broker validates Kafka's *unsecured* JSON Web Tokens (``alg`` ``none``, the
subject is the principal), which need no identity provider: the point is the hook, the
same one an MSK IAM signer or a Confluent OAuth client plugs into.
"""

from __future__ import annotations

import base64
import json
import time


def _b64(doc: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


class UnsecuredToken:
    """A token provider whose ``token()`` is a fresh unsecured JWT for ``subject``."""

    def __init__(self, subject: str) -> None:
        self.subject = subject

    def token(self) -> str:
        now = int(time.time())
        claims = {"sub": self.subject, "iat": now, "exp": now + 3600}
        return f"{_b64({'alg': 'none'})}.{_b64(claims)}."


def worker() -> UnsecuredToken:
    return UnsecuredToken("worker")


def router() -> UnsecuredToken:
    return UnsecuredToken("router")
