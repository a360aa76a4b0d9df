"""Webhook signatures: HMAC-SHA256 over ``timestamp + "." + body``.

Signing the timestamp with the body lets a receiver refuse a replayed request (an old
timestamp) as well as a forged or altered one. Receivers verify with ``verify_signature`` (or
its few lines, in any language): recompute the HMAC over the raw body bytes as received,
compare in constant time, and check the timestamp is recent.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-CXAgent-Timestamp"
SIGNATURE_HEADER = "X-CXAgent-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
PREFIX = "sha256="


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def sign(secret: str | bytes, timestamp: str | int, body: str | bytes) -> str:
    """The ``X-CXAgent-Signature`` value: ``sha256=`` and the hex HMAC-SHA256, keyed by the
    secret, of the timestamp, a dot and the body."""
    message = str(timestamp).encode() + b"." + _bytes(body)
    return PREFIX + hmac.new(_bytes(secret), message, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str | bytes,
    timestamp: str | int,
    body: str | bytes,
    signature: str,
    tolerance_s: float = 300,
    *,
    now: float | None = None,
) -> bool:
    """True when ``signature`` (the ``X-CXAgent-Signature`` header) is the sender's for this
    timestamp and body, and the timestamp is within ``tolerance_s`` seconds of ``now`` (the
    receiver's clock by default). Pass the body exactly as received, before any JSON parsing.
    """
    stamp = str(timestamp)
    try:
        sent = int(stamp)
    except ValueError:
        return False
    clock = time.time() if now is None else now
    if abs(clock - sent) > tolerance_s:
        return False
    expected = sign(secret, stamp, body)
    return hmac.compare_digest(expected.encode(), signature.strip().encode())
