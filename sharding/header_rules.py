"""The header fields execution does not decide: ``proposer`` and ``time_ms``
(docs/PROTOCOL.md section 3, "Header rules").

Two rules are part of block validity, checked by ``Ledger.execute`` before a replica
votes and by ``Ledger.commit`` on a block it never executed, and so also on every block
a node syncs or replays. Both are functions of the header and of the previous block
alone, so every replica reaches the same verdict at any time:

- ``proposer == primary(view)`` (``view mod n``, n the shard's genesis validators),
  with ``view`` the one the header records: a block re-proposed after a view change
  keeps its header, hence its original proposer. The relay derives a block's relayers
  from ``proposer``, so a made-up index would leave its receipts unannounced.
- ``time_ms > previous time_ms`` (strictly: two blocks never share a time), with the
  genesis' ``genesis_time_ms`` as the time before height 1.

A third rule needs a clock, so it is not part of validity: a replica votes for a fresh
proposal only if its ``time_ms`` is at most ``ahead_max_ms`` past the replica's own wall
clock (``check_time_not_ahead``). The node's driver applies it to PRE-PREPAREs only,
never to certified blocks (sync, catch-up, restart), which would make validity depend on
when a block is replayed. Together the rules keep block times increasing and close to
the honest replicas' clocks: a byzantine primary cannot push the chain's time far ahead,
which would otherwise force every later block to carry that time, or halt the chain at
2**64 - 1.

A primary keeps the rule even when its clock steps back: it proposes
``next_time_ms(previous, now)`` = ``max(previous + 1, now)``.
"""

from __future__ import annotations

from consensus.certificate import primary_of
from sharding.block import BlockHeader
from sharding.executor import InvalidBlock


def next_time_ms(previous_ms: int, now_ms: int) -> int:
    """The time a primary puts in its header: its clock, or just after the previous
    block's time when its clock is not past it."""
    return max(previous_ms + 1, now_ms)


def check_header_fields(header: BlockHeader, *, validators: int, previous_ms: int) -> None:
    """Raise ``InvalidBlock`` unless ``proposer`` and ``time_ms`` follow the rules
    (deterministic: part of block validity)."""
    # Verify the proposer is the primary of the view the header records.
    expected = primary_of(header.view, validators)
    if header.proposer != expected:
        raise InvalidBlock(
            f"proposer {header.proposer}, primary of view {header.view} is {expected}",
            reason="wrong_proposer")
    # Verify the block's time is after the previous block's.
    if header.time_ms <= previous_ms:
        raise InvalidBlock(f"time_ms {header.time_ms} not after the previous {previous_ms}",
                           reason="time_not_increasing")


def check_time_not_ahead(header: BlockHeader, *, now_ms: int, ahead_max_ms: int) -> None:
    """Raise ``InvalidBlock`` when ``time_ms`` is more than ``ahead_max_ms`` past
    ``now_ms`` (a replica's wall clock: only for a fresh proposal, never on replay)."""
    if header.time_ms > now_ms + ahead_max_ms:
        raise InvalidBlock(
            f"time_ms {header.time_ms} is {header.time_ms - now_ms} ms ahead of this "
            f"replica's clock (at most {ahead_max_ms})", reason="time_in_future")


__all__ = ["check_header_fields", "check_time_not_ahead", "next_time_ms"]
