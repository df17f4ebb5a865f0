"""The batch policy: when a primary cuts a block (PROTOCOL.md section 4).

One pure rule shared by the node's driver and the consensus simulator: propose when
a full block's worth of work is pending, or when the block interval has passed with
some work pending (transactions, or inbound receipts that can be applied); never an
empty block.
"""

from __future__ import annotations


def batch_due(pending: int, inbound_ready: bool, full_at: int, waited_ms: int,
              interval_ms: int) -> bool:
    """Whether to cut a block now.

    ``pending`` transactions wait (``full_at`` of them fill a block), ``inbound_ready``
    tells whether applicable inbound receipts wait, and ``waited_ms`` is how long the
    shell has waited against ``interval_ms``.
    """
    if pending == 0 and not inbound_ready:
        return False
    return pending >= full_at or waited_ms >= interval_ms
