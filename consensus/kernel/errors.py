"""The root of every error shardnet raises on purpose.

Expected faults (a peer or client sent something bad) are subclasses of
``ShardnetError`` and carry a short machine-readable ``reason``; a caller drops
or rejects with that reason and keeps running. ``InvariantViolation`` is the
opposite: our own state is broken, and the replica must halt loudly.
"""

from __future__ import annotations


class ShardnetError(Exception):
    """Base of all deliberate shardnet errors."""

    reason: str = "error"

    def __init__(self, detail: str = "", *, reason: str | None = None) -> None:
        super().__init__(detail or self.reason)
        if reason is not None:
            self.reason = reason
        self.detail = detail or self.reason


class DecodeError(ShardnetError):
    """Untrusted bytes did not decode into the expected canonical type."""

    reason = "malformed"


class OversizedError(DecodeError):
    """Untrusted bytes exceeded the size bound checked before decoding."""

    reason = "oversized"


class InvariantViolation(ShardnetError):
    """Our own state broke an invariant: a bug, never a peer's fault."""

    reason = "invariant"


def check(condition: bool, message: str) -> None:
    """Assert an invariant in production code; survives ``python -O``."""
    if not condition:
        raise InvariantViolation(message)
