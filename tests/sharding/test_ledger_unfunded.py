"""Senders that cannot pay (issue 14 finding 1): before, a transaction from a key the
genesis never funded was included as a failed call (``insufficient_balance``) and left
a permanent account record (its nonce): 200 of them grew a state of 24 entries to 224.
Now ``check_tx_payable`` makes it invalid: the proposer leaves it out, a block that
carries it is invalid, in the spec and in the parallel executor alike."""

from __future__ import annotations

import msgspec
import pytest

from sharding.accounts import first_shard_accounts
from sharding.audit import compute_audit
from sharding.executor import InvalidBlock, apply_block, commit_block_result
from sharding.genesis import genesis_state, total_supply
from sharding.parallel import InlineRunner, ParallelExecutor
from sharding.records import account_key, get_balance, get_nonce
from sharding.state import State
from sharding.tx import AddLiquidity, InvalidTx, Swap, Transfer, check_tx_payable
from tests.support.ledger import BALANCE, get_genesis, get_keys, get_pool_on, make_tx, propose

KEYS = get_keys(0)
STRANGERS = first_shard_accounts("never-funded", 0, 2, 200)


def fresh_state() -> State:
    return genesis_state(get_genesis(), 0)


def payable_reason(state: State, tx: object) -> str:
    try:
        check_tx_payable(state, tx)  # type: ignore[arg-type]
    except InvalidTx as exc:
        return exc.reason
    return ""


def test_unfunded_sender_is_left_out_of_proposals() -> None:
    state = fresh_state()
    spam = make_tx(STRANGERS[0], 0, Transfer(KEYS[0].public_key, 0, 1))
    honest = make_tx(KEYS[0], 0, Transfer(KEYS[1].public_key, 0, 1))
    block, result, rejected = propose(state, [spam, honest])
    assert [(r.tx, r.reason) for r in rejected] == [(spam, "unfunded_sender")]
    assert block.txs == [honest] and [o.ok for o in result.outcomes] == [True]


def test_unfunded_spam_leaves_no_account_records() -> None:
    state = fresh_state()
    entries = len(state)
    spam = [make_tx(key, 0, Transfer(KEYS[0].public_key, 0, 1)) for key in STRANGERS]
    block, result, rejected = propose(state, spam)
    assert block.txs == [] and len(rejected) == 200
    assert {r.reason for r in rejected} == {"unfunded_sender"}
    commit_block_result(state, result)
    assert len(state) == entries
    assert all(account_key(key.public_key) not in state for key in STRANGERS)


@pytest.mark.parametrize("executor", ["spec", "partitioned", "overlapped"])
def test_a_byzantine_block_with_an_unfunded_sender_is_invalid(executor: str) -> None:
    """The primary must leave it out; a block carrying it is refused, with the same
    verdict (index and reason) by the spec and the parallel executor."""
    state = fresh_state()
    honest = [make_tx(KEYS[i % 4], i // 4, Transfer(KEYS[5].public_key, 0, 1)) for i in range(12)]
    block, _, _ = propose(state, honest)
    spam = make_tx(STRANGERS[1], 0, Transfer(KEYS[0].public_key, 0, 1))
    bad = msgspec.structs.replace(block, txs=[*block.txs[:7], spam, *block.txs[7:]])
    apply = apply_block
    if executor != "spec":
        workers = 2
        apply = ParallelExecutor(InlineRunner(workers), parallel_txs_min=0,
                                 parallel_unsigned=True,
                                 overlap_workers_max=workers if executor == "overlapped" else 0,
                                 ).apply_block
    with pytest.raises(InvalidBlock) as caught:
        apply(state, bad)
    assert (caught.value.reason, caught.value.tx_index, caught.value.tx_reason) == (
        "invalid_tx", 7, "unfunded_sender")


def test_a_transfer_earlier_in_the_block_lets_a_new_account_spend() -> None:
    """The rule reads the state where the transaction stands in the block."""
    state = fresh_state()
    newcomer = STRANGERS[2]
    fund = make_tx(KEYS[0], 0, Transfer(newcomer.public_key, 1, 500))
    spend = make_tx(newcomer, 0, Transfer(KEYS[1].public_key, 1, 200))
    too_early = make_tx(newcomer, 0, Transfer(KEYS[1].public_key, 1, 200))
    block, result, rejected = propose(state, [too_early, fund, spend])
    assert [(r.tx, r.reason) for r in rejected] == [(too_early, "unfunded_sender")]
    assert block.txs == [fund, spend]
    commit_block_result(state, result)
    assert get_balance(state, newcomer.public_key, 1) == 300
    assert get_nonce(state, newcomer.public_key) == 1


def test_what_each_call_spends_must_be_held() -> None:
    state = fresh_state()
    a = KEYS[0]
    pool = get_pool_on(0)
    missing_pool = next(k.public_key for k in STRANGERS)  # no pool there: the call fails
    cases = {
        "transfer": (Transfer(KEYS[1].public_key, 2, BALANCE + 1), "insufficient_balance"),
        "transfer_all": (Transfer(KEYS[1].public_key, 2, BALANCE), ""),
        "swap": (Swap(pool.address, pool.asset_b, BALANCE + 1, 0), "insufficient_balance"),
        "deposit": (AddLiquidity(pool.address, 1, BALANCE + 1, 0), "insufficient_balance"),
        "deposit_ok": (AddLiquidity(pool.address, BALANCE, BALANCE, 0), ""),
        "no_pool": (AddLiquidity(missing_pool, BALANCE + 1, 1, 0), ""),
    }
    for name, (call, reason) in cases.items():
        assert payable_reason(state, make_tx(a, 0, call)) == reason, name
    # An account that exists but has nothing of the asset: insufficient, not unfunded.
    empty = make_tx(a, 0, Transfer(KEYS[1].public_key, 7, 1))
    assert payable_reason(state, empty) == "insufficient_balance"


def test_the_supply_audit_stays_exact_when_spenders_are_refused() -> None:
    shards = {0: fresh_state(), 1: genesis_state(get_genesis(), 1)}
    far = get_keys(1)[0]
    txs = [
        make_tx(KEYS[0], 0, Transfer(far.public_key, 0, BALANCE)),  # everything, cross-shard
        make_tx(KEYS[0], 1, Transfer(far.public_key, 0, 1)),  # nothing left: refused
        make_tx(STRANGERS[3], 0, Transfer(far.public_key, 0, 1)),  # never funded: refused
    ]
    _, result, rejected = propose(shards[0], txs)
    assert [r.reason for r in rejected] == ["insufficient_balance", "unfunded_sender"]
    commit_block_result(shards[0], result)
    audit = compute_audit(shards, result.receipts, total_supply(get_genesis()))
    assert audit.ok, audit
