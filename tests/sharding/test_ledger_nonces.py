"""``Ledger.committed_nonce`` remembers its answers until the state moves (issue 16,
deliverable 2: the mempool asked for every transaction it took, and every answer
decoded the sender's account record on the event loop)."""

from __future__ import annotations

import pytest

from sharding import ledger as ledger_module
from sharding.ledger import Ledger
from sharding.records import get_nonce
from sharding.state import StateReader
from sharding.tx import Transfer
from tests.support.ledger import get_genesis, get_keys, make_tx

KEYS = get_keys(0)


def commit_next(ledger: Ledger, nonce: int) -> None:
    tx = make_tx(KEYS[0], nonce, Transfer(KEYS[1].public_key, 0, 1))
    proposal = ledger.propose([tx], [], height=ledger.height + 1, view=0, time_ms=1 + nonce,
                              proposer=0, txs_max=10)
    ledger.commit(proposal.payload, proposal.block_hash, ledger.height + 1)


def test_answers_are_remembered_until_a_commit_moves_the_state(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = Ledger(get_genesis(), 0)
    reads: list[bytes] = []

    def counting(state: StateReader, sender: bytes) -> int:
        reads.append(sender)
        return get_nonce(state, sender)

    monkeypatch.setattr(ledger_module, "get_nonce", counting)
    sender = KEYS[0].public_key
    assert [ledger.committed_nonce(sender) for _ in range(3)] == [0, 0, 0]
    assert reads == [sender]
    commit_next(ledger, 0)
    assert ledger.committed_nonce(sender) == 1  # the commit is seen at once
    assert ledger.committed_nonce(KEYS[1].public_key) == 0
    assert ledger.committed_nonce(sender) == 1
    assert len(reads) == 3


def test_a_replaced_state_is_read_afresh() -> None:
    ledger = Ledger(get_genesis(), 0)
    sender = KEYS[0].public_key
    assert ledger.committed_nonce(sender) == 0
    other = Ledger(get_genesis(), 0)
    commit_next(other, 0)
    ledger.state = other.state
    assert ledger.committed_nonce(sender) == 1
