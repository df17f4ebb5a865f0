"""What the node's service answers its clients with, shared by the service
(``node/service.py``) and the HTTP layer (``node/api.py``) so that neither imports
the other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consensus.kernel.errors import ShardnetError


@dataclass(frozen=True, slots=True)
class SubmitResult:
    tx_hash: bytes | None
    accepted: bool
    error: str | None = None
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "hash": self.tx_hash.hex() if self.tx_hash else None,
            "accepted": self.accepted,
        }
        if not self.accepted:
            body["error"] = self.error
            body["detail"] = self.detail
        return body


class ApiError(ShardnetError):
    """A client's request the node refuses, with the HTTP status that says so."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason, reason=reason)
        self.status = status
