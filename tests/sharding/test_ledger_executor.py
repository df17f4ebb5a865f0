"""The sequential executor, the spec of a block's state transition (PROTOCOL.md 2-3, 5-6)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sharding.audit import compute_audit
from sharding.block import Block, BlockHeader
from sharding.executor import (
    InvalidBlock,
    Rejected,
    apply_block,
    build_block,
    commit_block_result,
)
from sharding.genesis import genesis_state, total_supply
from sharding.programs import compute_swap_output
from sharding.receipts import CREDIT, REFUND, SWAP, SWAP_OUTPUT, Receipt
from sharding.records import get_balance, get_in_cursor, get_nonce, get_out_seq
from sharding.state import State
from sharding.tx import AddLiquidity, Call, RemoveLiquidity, SignedTx, Swap, Transfer
from tests.support.ledger import (
    BALANCE,
    RESERVE,
    get_genesis,
    get_keys,
    get_pool_on,
    make_tx,
    propose,
)


def states() -> dict[int, State]:
    return {shard: genesis_state(get_genesis(), shard) for shard in (0, 1)}


def local_transfers(count: int = 3) -> list[SignedTx]:
    a, b = get_keys(0)[:2]
    return [make_tx(a, n, Transfer(b.public_key, 0, 10 + n)) for n in range(count)]


def replace_header(block: Block, **changes: object) -> Block:
    return msgspec.structs.replace(block, header=msgspec.structs.replace(block.header, **changes))


# -- valid blocks


def test_apply_block_reproduces_the_proposal_without_mutating_state() -> None:
    state = states()[0]
    root = state.root
    block, result, rejected = propose(state, local_transfers())
    assert rejected == [] and state.root == root
    again = apply_block(state, block)
    assert again == result and state.root == root
    commit_block_result(state, result)
    assert state.root == result.state_root == block.header.state_root
    assert state.root == State.from_items(state.items()).root


def test_failing_call_consumes_the_nonce_and_records_its_error() -> None:
    state = states()[0]
    a, b = get_keys(0)[:2]
    pool = get_pool_on(0)
    txs = [
        make_tx(a, 0, Swap(pool.address, pool.asset_a, 1000, 10**18)),  # slippage
        make_tx(a, 1, Transfer(b.public_key, 0, 5)),
    ]
    block, result, rejected = propose(state, txs)
    assert rejected == [] and len(block.txs) == 2
    assert [(o.ok, o.error) for o in result.outcomes] == [
        (False, "slippage"),
        (True, ""),
    ]
    commit_block_result(state, result)
    assert get_nonce(state, a.public_key) == 2
    assert get_balance(state, a.public_key, 0) == BALANCE - 5
    assert get_balance(state, a.public_key, pool.asset_a) == BALANCE - 5 * (pool.asset_a == 0)


def test_overspending_tx_is_left_out_and_its_nonce_stays_free() -> None:
    """Spending more than the balance is not a failed call but an invalid transaction
    (issue 14 finding 1): the proposer leaves it out, the nonce stays the sender's."""
    state = states()[0]
    a, b = get_keys(0)[:2]
    overspend = make_tx(a, 0, Transfer(b.public_key, 0, BALANCE + 1))
    honest = make_tx(a, 0, Transfer(b.public_key, 0, 5))
    block, result, rejected = propose(state, [overspend, honest])
    assert [r.reason for r in rejected] == ["insufficient_balance"]
    assert len(block.txs) == 1 and result.outcomes[0].ok
    commit_block_result(state, result)
    assert get_nonce(state, a.public_key) == 1


def test_cross_shard_transfer_debits_here_and_credits_there_exactly_once() -> None:
    s = states()
    a = get_keys(0)[0]
    far = get_keys(1)[0]
    txs = [make_tx(a, n, Transfer(far.public_key, 2, 100)) for n in range(2)]
    _, result, _ = propose(s[0], txs)
    kinds = [(r.kind, r.seq, r.dst_shard) for r in result.receipts]
    assert kinds == [(CREDIT, 1, 1), (CREDIT, 2, 1)]
    commit_block_result(s[0], result)
    assert get_out_seq(s[0], 1) == 2
    assert get_balance(s[0], a.public_key, 2) == BALANCE - 200
    # Delivered twice and out of order: applied once, in order.
    inbound = list(reversed(result.receipts)) * 2
    block, applied, _ = propose(s[1], [], inbound)
    assert [r.seq for r in block.inbound] == [1, 2]
    commit_block_result(s[1], applied)
    assert get_in_cursor(s[1], 0) == 2
    assert get_balance(s[1], far.public_key, 2) == BALANCE + 200
    block, _, _ = propose(s[1], [], inbound, height=2)
    assert block.inbound == []


def test_cross_shard_swap_sends_its_output_home() -> None:
    s = states()
    a = get_keys(0)[0]
    pool = get_pool_on(1)
    _, result, _ = propose(s[0], [make_tx(a, 0, Swap(pool.address, 0, 5000, 1))])
    (swap,) = result.receipts
    assert (swap.kind, swap.pool, swap.amount) == (SWAP, pool.address, 5000)
    commit_block_result(s[0], result)
    _, remote, _ = propose(s[1], [], [swap])
    (output,) = remote.receipts
    expected = compute_swap_output(5000, RESERVE, RESERVE)
    assert (output.kind, output.dst_shard, output.amount, output.asset) == (
        SWAP_OUTPUT,
        0,
        expected,
        1,
    )
    assert output.origin == swap.origin == result.outcomes[0].tx_hash
    commit_block_result(s[1], remote)
    _, home, _ = propose(s[0], [], [output], height=2)
    commit_block_result(s[0], home)
    assert get_balance(s[0], a.public_key, 1) == BALANCE + expected
    audit = compute_audit(s, [*result.receipts, *remote.receipts], total_supply(get_genesis()))
    assert audit.ok and audit.in_flight_receipts == 0


def test_cross_shard_swap_with_slippage_is_refunded() -> None:
    s = states()
    a = get_keys(0)[0]
    pool = get_pool_on(1)
    _, result, _ = propose(s[0], [make_tx(a, 0, Swap(pool.address, 0, 5000, 10**9))])
    commit_block_result(s[0], result)
    _, remote, _ = propose(s[1], [], result.receipts)
    assert [(o.ok, o.error) for o in remote.inbound_outcomes] == [(False, "slippage")]
    (refund,) = remote.receipts
    assert (refund.kind, refund.amount, refund.asset, refund.error) == (REFUND, 5000, 0, "slippage")
    commit_block_result(s[1], remote)
    _, home, _ = propose(s[0], [], [refund], height=2)
    commit_block_result(s[0], home)
    assert get_balance(s[0], a.public_key, 0) == BALANCE


# -- the proposer filters invalid transactions out, with a reason


def test_build_block_leaves_invalid_transactions_out_with_their_reason() -> None:
    state = states()[0]
    a, b = get_keys(0)[:2]
    good = make_tx(a, 0, Transfer(b.public_key, 0, 1))
    bad_sig = SignedTx(make_tx(b, 0, Transfer(a.public_key, 0, 1)).body, bytes(64))
    gap = make_tx(a, 5, Transfer(b.public_key, 0, 1))
    replay = good
    wrong_shard = make_tx(get_keys(1)[0], 0, Transfer(a.public_key, 0, 1))
    block, _, rejected = propose(state, [good, bad_sig, gap, replay, wrong_shard])
    assert block.txs == [good]
    assert [r.reason for r in rejected] == [
        "bad_signature",
        "wrong_nonce",
        "wrong_nonce",
        "wrong_shard",
    ]


def test_build_block_caps_the_number_of_valid_transactions() -> None:
    state = states()[0]
    block, _, _ = build_block(
        state,
        local_transfers(5),
        [],
        height=1,
        view=0,
        prev_hash=bytes(32),
        time_ms=0,
        proposer=0,
        txs_max=3,
    )
    assert len(block.txs) == 3


# -- invalid blocks, each by its reason


def invalid_reason(state: State, block: Block) -> str:
    with pytest.raises(InvalidBlock) as info:
        apply_block(state, block)
    return info.value.reason


def test_rejects_block_with_a_bad_signature() -> None:
    state = states()[0]
    block, _, _ = propose(state, local_transfers(2))
    forged = msgspec.structs.replace(
        block, txs=[block.txs[0], SignedTx(block.txs[1].body, bytes(64))]
    )
    with pytest.raises(InvalidBlock) as info:
        apply_block(state, forged)
    assert (info.value.reason, info.value.tx_index, info.value.tx_reason) == (
        "invalid_tx",
        1,
        "bad_signature",
    )


def test_rejects_block_with_a_wrong_nonce() -> None:
    state = states()[0]
    block, _, _ = propose(state, local_transfers(2))
    swapped = msgspec.structs.replace(block, txs=[block.txs[1], block.txs[0]])
    with pytest.raises(InvalidBlock) as info:
        apply_block(state, swapped)
    assert (info.value.reason, info.value.tx_reason) == ("invalid_tx", "wrong_nonce")


def test_rejects_block_with_a_transaction_of_another_shard() -> None:
    state = states()[0]
    block, _, _ = propose(state, [])
    other = make_tx(get_keys(1)[0], 0, Transfer(get_keys(0)[0].public_key, 0, 1))
    with pytest.raises(InvalidBlock) as info:
        apply_block(state, msgspec.structs.replace(block, txs=[other]))
    assert info.value.tx_reason == "wrong_shard"


def test_rejects_block_for_another_shard() -> None:
    state = states()[0]
    block, _, _ = propose(state, local_transfers(1))
    assert invalid_reason(state, replace_header(block, shard=1)) == "wrong_shard"


@pytest.mark.parametrize("root", ["tx_root", "inbound_root", "receipts_root", "state_root"])
def test_rejects_block_whose_header_root_differs(root: str) -> None:
    state = states()[0]
    block, _, _ = propose(state, local_transfers(1))
    assert invalid_reason(state, replace_header(block, **{root: bytes(32)})) == f"{root}_mismatch"


def emitted_to_shard_1(count: int) -> list[Receipt]:
    s = states()
    a, far = get_keys(0)[0], get_keys(1)[0]
    txs = [make_tx(a, n, Transfer(far.public_key, 0, 7)) for n in range(count)]
    return propose(s[0], txs)[1].receipts


def block_with_inbound(state: State, inbound: list[Receipt]) -> Block:
    block, _, _ = propose(state, [])
    return msgspec.structs.replace(block, inbound=inbound)


def test_rejects_inbound_receipt_gap() -> None:
    receipts = emitted_to_shard_1(2)
    state = states()[1]
    assert invalid_reason(state, block_with_inbound(state, [receipts[1]])) == "receipt_gap"


def test_rejects_inbound_receipt_duplicate() -> None:
    receipts = emitted_to_shard_1(1)
    state = states()[1]
    _, result, _ = propose(state, [], receipts)
    commit_block_result(state, result)
    assert invalid_reason(state, block_with_inbound(state, receipts)) == "receipt_duplicate"


def test_rejects_inbound_receipt_repeated_within_a_block() -> None:
    receipts = emitted_to_shard_1(1)
    state = states()[1]
    assert (
        invalid_reason(state, block_with_inbound(state, receipts * 2)) == "receipt_duplicate"
    )


def test_rejects_inbound_receipt_for_another_shard() -> None:
    receipts = emitted_to_shard_1(1)
    state = states()[0]
    assert invalid_reason(state, block_with_inbound(state, receipts)) == "bad_receipt"


def test_rejects_inbound_receipt_whose_recipient_lives_elsewhere() -> None:
    (receipt,) = emitted_to_shard_1(1)
    moved = msgspec.structs.replace(receipt, recipient=get_keys(0)[0].public_key)
    state = states()[1]
    assert invalid_reason(state, block_with_inbound(state, [moved])) == "bad_receipt"


def test_rejects_block_with_proof_count_mismatch() -> None:
    from sharding.block import ReceiptProof
    from sharding.merkle import InclusionProof

    receipts = emitted_to_shard_1(2)
    state = states()[1]
    block = block_with_inbound(state, receipts)
    proof = ReceiptProof(source=0, inclusion=InclusionProof(0, 1, []))
    block = msgspec.structs.replace(block, inbound_proofs=[proof])
    assert invalid_reason(state, block) == "bad_proofs"


# -- properties


@st.composite
def ops(draw: st.DrawFn) -> list[tuple[int, int, str, int, int, int]]:
    """(shard, sender, kind, target, asset, amount) rows."""
    rows = []
    for _ in range(draw(st.integers(1, 14))):
        rows.append(
            (
                draw(st.integers(0, 1)),
                draw(st.integers(0, 3)),
                draw(st.sampled_from(["transfer", "transfer", "swap", "swap", "add", "remove"])),
                draw(st.integers(0, 7)),
                draw(st.integers(0, 2)),
                draw(st.sampled_from([1, 50, 10_000, BALANCE // 2, BALANCE + 1])),
            )
        )
    return rows


def make_blocks(rows: list[tuple[int, int, str, int, int, int]]) -> dict[int, list[SignedTx]]:
    nonces: dict[bytes, int] = {}
    txs: dict[int, list[SignedTx]] = {0: [], 1: []}
    pools = [get_pool_on(0).address, get_pool_on(1).address]
    targets = [*get_keys(0)[:4], *get_keys(1)[:4]]
    for shard, sender, kind, target, asset, amount in rows:
        key = get_keys(shard)[sender]
        nonce = nonces.get(key.public_key, 0)
        nonces[key.public_key] = nonce + 1
        call: Call
        if kind == "transfer":
            call = Transfer(targets[target].public_key, asset, amount)
        elif kind == "swap":
            call = Swap(pools[target % 2], asset % 2, amount, 0)
        elif kind == "add":
            call = AddLiquidity(pools[shard], amount, amount, 0)
        else:
            call = RemoveLiquidity(pools[shard], amount // 2 + 1, 0, 0)
        txs[shard].append(make_tx(key, nonce, call))
    return txs


def assert_only_overspending_rejected(txs: list[SignedTx], rejected: list[Rejected]) -> None:
    """A sender's transaction spending more than it holds is left out; its later
    nonces then cannot run (``wrong_nonce``). Nothing else is rejected."""
    overspent: set[bytes] = set()
    by_tx = {id(r.tx): r.reason for r in rejected}
    for tx in txs:
        reason = by_tx.get(id(tx))
        if reason == "insufficient_balance":
            overspent.add(tx.body.sender)
        elif reason is not None:
            assert reason == "wrong_nonce" and tx.body.sender in overspent, reason
    assert len(by_tx) == len(rejected)


@settings(max_examples=25)
@given(ops(), st.randoms(use_true_random=False))
def test_conservation_per_asset_with_receipts_in_flight(
    rows: list[tuple[int, int, str, int, int, int]], rng: object
) -> None:
    import random

    assert isinstance(rng, random.Random)
    s = states()
    supply = total_supply(get_genesis())
    txs = make_blocks(rows)
    emitted: list[Receipt] = []
    pending: dict[int, list[Receipt]] = {0: [], 1: []}
    for height in range(1, 8):
        for shard in (0, 1):
            # Deliver a random subset, shuffled and with duplicates: the executor
            # must take them in order, exactly once.
            offered = [r for r in pending[shard] if rng.random() < 0.7] * 2
            rng.shuffle(offered)
            fresh = txs[shard] if height == 1 else []
            block, result, rejected = propose(s[shard], fresh, offered, height)
            assert_only_overspending_rejected(fresh, rejected)
            commit_block_result(s[shard], result)
            emitted.extend(result.receipts)
            for receipt in result.receipts:
                pending[receipt.dst_shard].append(receipt)
            applied = {(r.src_shard, r.seq) for r in block.inbound}
            pending[shard] = [r for r in pending[shard] if (r.src_shard, r.seq) not in applied]
            audit = compute_audit(s, emitted, supply)
            assert audit.ok, audit
    # Quiesce: deliver everything until nothing is in flight.
    for height in range(8, 14):
        for shard in (0, 1):
            block, result, _ = propose(s[shard], [], pending[shard], height)
            commit_block_result(s[shard], result)
            emitted.extend(result.receipts)
            for receipt in result.receipts:
                pending[receipt.dst_shard].append(receipt)
            applied = {(r.src_shard, r.seq) for r in block.inbound}
            pending[shard] = [r for r in pending[shard] if (r.src_shard, r.seq) not in applied]
    audit = compute_audit(s, emitted, supply)
    assert audit.ok and audit.in_flight_receipts == 0
    assert pending == {0: [], 1: []}
    for src, dst in ((0, 1), (1, 0)):
        assert get_in_cursor(s[dst], src) == get_out_seq(s[src], dst)


@settings(max_examples=15)
@given(ops())
def test_same_block_on_the_same_state_gives_identical_results(
    rows: list[tuple[int, int, str, int, int, int]],
) -> None:
    s = states()
    block, result, _ = propose(s[0], make_blocks(rows)[0])
    first = apply_block(s[0], block)
    second = apply_block(genesis_state(get_genesis(), 0), block)
    assert first == second == result
    assert first.writes == second.writes


def test_block_header_fields_are_the_protocol_ones() -> None:
    assert BlockHeader.__struct_fields__ == (
        "shard",
        "height",
        "view",
        "prev_hash",
        "time_ms",
        "proposer",
        "tx_root",
        "inbound_root",
        "receipts_root",
        "state_root",
        "evidence_root",
    )


@settings(max_examples=25)
@given(
    st.lists(st.integers(1, 1000), min_size=1, max_size=12),
    st.randoms(use_true_random=False),
)
def test_receipts_apply_exactly_once_in_order_under_any_delivery(
    amounts: list[int], rng: object
) -> None:
    import random

    assert isinstance(rng, random.Random)
    s = states()
    a, far = get_keys(0)[0], get_keys(1)[0]
    txs = [make_tx(a, n, Transfer(far.public_key, 0, amount)) for n, amount in enumerate(amounts)]
    _, sent, _ = propose(s[0], txs)
    commit_block_result(s[0], sent)
    applied: list[int] = []
    for height in range(1, 30):
        # Any subset, any order, with duplicates and replays of applied receipts.
        offered = [r for r in sent.receipts if rng.random() < 0.5] * 2
        rng.shuffle(offered)
        block, result, _ = propose(s[1], [], offered, height)
        commit_block_result(s[1], result)
        applied.extend(r.seq for r in block.inbound)
        if len(applied) == len(amounts):
            break
    assert applied == list(range(1, len(amounts) + 1))
    assert get_balance(s[1], far.public_key, 0) == BALANCE + sum(amounts)
    assert get_in_cursor(s[1], 0) == len(amounts)
