"""Transactions: body, call, signature, hash and admission (PROTOCOL.md section 2).

A transaction is ``SignedTx(body, signature)``. The signed message is
``TAG_TX || encode(body)``, which is also the preimage of ``tx_hash``: one byte of
domain separation keeps a transaction signature from ever verifying as a vote or
any other signed object. Admission is split in two so that the mempool, the
proposer and the executor share the same checks: ``check_tx_stateless`` (chain,
shape, shard, small-order keys, signature), then, against a state view, ``check_tx_nonce``
and ``check_tx_payable`` (the sender can pay what the call spends: PROTOCOL.md section 2).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Annotated

import msgspec

from consensus.kernel.codec import U64_MAX, WireStruct, decode, encode
from consensus.kernel.crypto import (
    TAG_TX,
    KeyPair,
    is_acceptable_public_key,
    tagged_hash,
    verify_signature,
)
from consensus.kernel.errors import ShardnetError
from consensus.kernel.limits import RECORD_BYTES_MAX, TX_BYTES_MAX
from sharding.accounts import ADDRESS_BYTES, shard_of
from sharding.records import (
    Account,
    account_key,
    compute_account_balance,
    get_nonce,
    get_pool,
)
from sharding.state import StateReader

CHAIN_ID_CHARS_MAX = 64
ASSET_MAX = 2**32 - 1

U64 = Annotated[int, msgspec.Meta(ge=0)]  # msgpack caps ints at 2**64 - 1
AssetId = Annotated[int, msgspec.Meta(ge=0, le=ASSET_MAX)]
Address = Annotated[bytes, msgspec.Meta(min_length=ADDRESS_BYTES, max_length=ADDRESS_BYTES)]
Signature = Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]
ChainId = Annotated[str, msgspec.Meta(max_length=CHAIN_ID_CHARS_MAX)]


class InvalidTx(ShardnetError):
    """A transaction that must never enter a block; ``reason`` says why."""

    reason = "invalid_tx"


# ---------------------------------------------------------------------------
# Calls: a tagged union; the integer tag is the first array element.


class Transfer(WireStruct, frozen=True, tag=0):
    to: Address
    asset: AssetId
    amount: U64


class Swap(WireStruct, frozen=True, tag=1):
    pool: Address
    asset_in: AssetId
    amount_in: U64
    min_out: U64


class AddLiquidity(WireStruct, frozen=True, tag=2):
    """Deposit up to ``amount_a`` / ``amount_b`` (in the pool's asset order)."""

    pool: Address
    amount_a: U64
    amount_b: U64
    min_shares: U64


class RemoveLiquidity(WireStruct, frozen=True, tag=3):
    pool: Address
    shares: U64
    min_a: U64
    min_b: U64


# -- lending (issue 18, engineer L; sharding/lending.py). ``market`` is the lending
# program's address (genesis: ``lending_shard``). Supply, repay and withdraw may come
# from any shard (receipts SUPPLY / REPAY / WITHDRAW); borrow and liquidate must be
# sent from the lending shard (``check_tx_stateless``: ``market_not_local``).


class Supply(WireStruct, frozen=True, tag=4):
    market: Address
    asset: AssetId
    amount: U64


class Withdraw(WireStruct, frozen=True, tag=5):
    """Withdraw ``amount`` of the underlying asset (burns the shares it is worth, rounded up)."""

    market: Address
    asset: AssetId
    amount: U64


class Borrow(WireStruct, frozen=True, tag=6):
    market: Address
    asset: AssetId
    amount: U64


class Repay(WireStruct, frozen=True, tag=7):
    """Repay up to ``amount`` of the sender's debt in ``asset`` (the excess stays)."""

    market: Address
    asset: AssetId
    amount: U64


class Liquidate(WireStruct, frozen=True, tag=8):
    """Repay ``amount`` of ``borrower``'s debt in ``debt_asset``; take collateral
    shares of ``collateral_asset`` worth ``amount * (1 + bonus)``."""

    market: Address
    borrower: Address
    debt_asset: AssetId
    amount: U64
    collateral_asset: AssetId


LENDING_CALLS = (Supply, Withdraw, Borrow, Repay, Liquidate)
LOCAL_LENDING_CALLS = (Borrow, Liquidate)


# -- farms (issue 18, engineer F; sharding/farms.py). ``pool`` names the farm: one per
# pool, created at genesis on the pool's shard. Farm calls are sent from that shard
# (``check_tx_stateless``: ``pool_not_local``), like liquidity calls: LP shares, the
# farm and its stakes live next to the pool.


class Stake(WireStruct, frozen=True, tag=9):
    """Move ``shares`` of the sender's LP shares of ``pool`` into its farm."""

    pool: Address
    shares: U64


class Harvest(WireStruct, frozen=True, tag=10):
    """Pay the sender's pending farm rewards."""

    pool: Address


class Unstake(WireStruct, frozen=True, tag=11):
    """Move ``shares`` back to the sender's LP shares; pays the pending rewards too."""

    pool: Address
    shares: U64


FARM_CALLS = (Stake, Harvest, Unstake)


Call = (
    Transfer | Swap | AddLiquidity | RemoveLiquidity
    | Supply | Withdraw | Borrow | Repay | Liquidate
    | Stake | Harvest | Unstake
)


class TxBody(WireStruct, frozen=True):
    chain_id: ChainId
    sender: Address
    nonce: U64
    call: Call


class SignedTx(WireStruct, frozen=True):
    body: TxBody
    signature: Signature


# ---------------------------------------------------------------------------
# Hashing, signing, decoding


def compute_signing_message(body: TxBody) -> bytes:
    return bytes((TAG_TX,)) + encode(body)


def tx_hash(tx: SignedTx) -> bytes:
    return tagged_hash(TAG_TX, encode(tx.body))


_SIGNED_TX_HEAD = 0x92  # msgpack: an array of two, [body, signature]
_SIGNATURE_HEAD = bytes((0xC4, 64))  # msgpack: bin 8 of 64 bytes
_SIGNATURE_TAIL_BYTES = 2 + 64


def raw_tx_hash(raw: bytes) -> bytes | None:
    """``tx_hash`` read off an encoded transaction, without decoding it: the body's
    encoding is the bytes between the array header and the signature. None when
    ``raw`` is not so shaped. Equal to ``tx_hash(decode_tx(raw))`` whenever ``raw``
    decodes (decoding is canonical: the bytes are the encoding). For bytes that do not
    decode it is a hash of some bytes, which names a transaction only if they are that
    transaction's body encoding (SHA-256): so a hash found in the mempool means the
    transaction is held, whether or not the rest decodes."""
    if (len(raw) <= _SIGNATURE_TAIL_BYTES + 1 or raw[0] != _SIGNED_TX_HEAD
            or raw[-_SIGNATURE_TAIL_BYTES:-64] != _SIGNATURE_HEAD):
        return None
    return tagged_hash(TAG_TX, raw[1:-_SIGNATURE_TAIL_BYTES])


def sign_tx(keypair: KeyPair, body: TxBody) -> SignedTx:
    if keypair.public_key != body.sender:
        raise ValueError("the key pair does not belong to the sender")
    return SignedTx(body=body, signature=keypair.sign(compute_signing_message(body)))


def verify_tx_signature(tx: SignedTx) -> bool:
    return verify_signature(tx.body.sender, compute_signing_message(tx.body), tx.signature)


def decode_tx(data: bytes) -> SignedTx:
    """Decode untrusted bytes; raises only ``DecodeError`` (``OversizedError`` above 4 KiB)."""
    return decode(data, SignedTx, TX_BYTES_MAX)


# ---------------------------------------------------------------------------
# Admission


def get_call_amounts(call: Call) -> tuple[int, ...]:
    if isinstance(call, (Stake, Unstake)):
        return (call.shares,)
    if isinstance(call, Harvest):
        return ()
    if isinstance(call, Transfer):
        return (call.amount,)
    if isinstance(call, Swap):
        return (call.amount_in, call.min_out)
    if isinstance(call, AddLiquidity):
        return (call.amount_a, call.amount_b, call.min_shares)
    if isinstance(call, RemoveLiquidity):
        return (call.shares, call.min_a, call.min_b)
    return (call.amount,)


def get_call_addresses(call: Call) -> tuple[bytes, ...]:
    if isinstance(call, Transfer):
        return (call.to,)
    if isinstance(call, Liquidate):
        return (call.market, call.borrower)
    if isinstance(call, LENDING_CALLS):
        return (call.market,)
    return (call.pool,)


def is_well_formed(tx: SignedTx) -> bool:
    """The shape checks that msgspec enforces on decode, for objects built in Python."""
    body = tx.body
    return (
        isinstance(body.chain_id, str)
        and len(body.chain_id) <= CHAIN_ID_CHARS_MAX
        and len(body.sender) == ADDRESS_BYTES
        and len(tx.signature) == 64
        and 0 <= body.nonce < U64_MAX  # the nonce after it must fit too
        and all(len(a) == ADDRESS_BYTES for a in get_call_addresses(body.call))
        and all(0 <= amount <= U64_MAX for amount in get_call_amounts(body.call))
    )


def get_primary_amount(call: Call) -> int:
    if isinstance(call, (Stake, Unstake)):
        return call.shares
    if isinstance(call, Harvest):
        return 1  # a harvest pays whatever is pending: no amount to be zero
    if isinstance(call, Transfer):
        return call.amount
    if isinstance(call, Swap):
        return call.amount_in
    if isinstance(call, AddLiquidity):
        return max(call.amount_a, call.amount_b)
    if isinstance(call, RemoveLiquidity):
        return call.shares
    return call.amount


def check_tx_stateless(
    tx: SignedTx,
    chain_id: str,
    shard: int,
    num_shards: int,
    *,
    verify_signatures: bool = True,
) -> None:
    """Raise ``InvalidTx`` unless ``tx`` may execute on ``shard`` whatever the state."""
    body = tx.body
    # Verify the fields have their declared sizes and ranges.
    if not is_well_formed(tx):
        raise InvalidTx("field out of range", reason="malformed")
    # Verify the transaction is for this chain.
    if body.chain_id != chain_id:
        raise InvalidTx(f"chain {body.chain_id!r} is not {chain_id!r}", reason="wrong_chain")
    # Verify the sender lives on this shard.
    if shard_of(body.sender, num_shards) != shard:
        raise InvalidTx(f"sender is not on shard {shard}", reason="wrong_shard")
    # Verify the call moves something.
    if get_primary_amount(body.call) == 0:
        raise InvalidTx("zero amount", reason="zero_amount")
    # Verify liquidity and farm calls are local: LP shares and stakes live next to the pool.
    if isinstance(body.call, (AddLiquidity, RemoveLiquidity, *FARM_CALLS)) and (
        shard_of(body.call.pool, num_shards) != shard
    ):
        raise InvalidTx("liquidity and farm calls must be on the pool's shard",
                        reason="pool_not_local")
    # Verify borrow and liquidate are sent from the lending shard.
    if isinstance(body.call, LOCAL_LENDING_CALLS) and (
        shard_of(body.call.market, num_shards) != shard
    ):
        raise InvalidTx("borrow and liquidate must be sent from the lending shard",
                        reason="market_not_local")
    # Verify no address is a key anyone can sign for (small order or non-canonical).
    if not all(map(is_acceptable_public_key, (body.sender, *get_call_addresses(body.call)))):
        raise InvalidTx("small-order or non-canonical key", reason="small_order_key")
    # Verify the sender signed the body.
    if verify_signatures and not verify_tx_signature(tx):
        raise InvalidTx("signature does not verify", reason="bad_signature")


STATELESS_PASSED_MAX = 100_000  # transactions remembered as passing (~31 MB when full)


class StatelessPassed:
    """Transactions that passed ``check_tx_stateless`` (the signature aside) for a given
    (chain, shard, shard count): the checks are a pure function of the signed bytes and
    those three, so one that passed once passes again. Keyed by ``tx_hash`` and the
    signature bytes, which together fix the encoding (the body's hash and the
    signature: a hit is the same signed bytes). Bounded (oldest out); shared by the
    admission and ledger threads: the look-up (the hot path, once per transaction of
    a block) is one dict operation, adding takes the lock. Only a pass is remembered: a failure
    is checked again and raises with its own reason, so outcomes never depend on it."""

    def __init__(self, capacity: int = STATELESS_PASSED_MAX) -> None:
        self.capacity = capacity
        self._passed: OrderedDict[tuple[bytes, str, int, int], None] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, tx: SignedTx, digest: bytes, chain_id: str, shard: int,
              num_shards: int) -> None:
        """``check_tx_stateless(..., verify_signatures=False)``, skipped for a transaction
        that passed before; ``digest`` must be ``tx_hash(tx)``."""
        if type(tx.signature) is not bytes:  # built in Python: checked every time
            check_tx_stateless(tx, chain_id, shard, num_shards, verify_signatures=False)
            return
        key = (digest + tx.signature, chain_id, shard, num_shards)
        if key in self._passed:  # one C-level look-up under the GIL: no lock needed
            return
        check_tx_stateless(tx, chain_id, shard, num_shards, verify_signatures=False)
        self._add(key)

    def remember(self, tx: SignedTx, digest: bytes, chain_id: str, shard: int,
                 num_shards: int) -> None:
        """Record that ``tx`` has just passed ``check_tx_stateless`` (the caller ran it,
        with its signature): a caller that checks anyway does not check twice."""
        if type(tx.signature) is bytes:
            self._add((digest + tx.signature, chain_id, shard, num_shards))

    def _add(self, key: tuple[bytes, str, int, int]) -> None:
        with self._lock:
            self._passed[key] = None
            if len(self._passed) > self.capacity:
                self._passed.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._passed.clear()

    def __len__(self) -> int:
        return len(self._passed)


# One per process: admission fills it, block building and validation (the proposer's
# candidates, a replica's PRE-PREPARE, a synced block) find what admission checked.
stateless_passed = StatelessPassed()


def check_tx_nonce(state_view: StateReader, tx: SignedTx) -> None:
    """Raise ``InvalidTx(reason="wrong_nonce")`` unless the nonce is the sender's next."""
    expected = get_nonce(state_view, tx.body.sender)
    # Verify the nonce is the sender's next nonce.
    if tx.body.nonce != expected:
        raise InvalidTx(f"nonce {tx.body.nonce}, expected {expected}", reason="wrong_nonce")


def get_call_spend(state_view: StateReader, call: Call) -> tuple[tuple[int, int], ...]:
    """(asset, amount) pairs the call may debit from its sender, at most: a transfer's
    amount, a swap's input, a deposit's full offer of both pool assets (nothing when the
    pool does not exist: the call fails ``no_pool``), a supply's or repayment's amount,
    a liquidation's repayment. Removing liquidity spends LP shares, withdrawing and
    borrowing spend nothing from the balance."""
    if isinstance(call, Transfer):
        return ((call.asset, call.amount),)
    if isinstance(call, Swap):
        return ((call.asset_in, call.amount_in),)
    if isinstance(call, AddLiquidity):
        pool = get_pool(state_view, call.pool)
        if pool is None:
            return ()
        return ((pool.asset_a, call.amount_a), (pool.asset_b, call.amount_b))
    if isinstance(call, (Supply, Repay)):
        return ((call.asset, call.amount),)
    if isinstance(call, Liquidate):
        return ((call.debt_asset, call.amount),)
    return ()


def check_tx_payable(state_view: StateReader, tx: SignedTx) -> None:
    """Raise ``InvalidTx`` unless the sender can pay: its account exists
    (``unfunded_sender``) and holds at least what the call spends of each asset
    (``insufficient_balance``). Reads only the sender's account and, for a deposit,
    the pool: both in the call's declared access."""
    raw = state_view.get(account_key(tx.body.sender))
    # Verify the sender has an account: a key that was never funded cannot pay.
    if raw is None:
        raise InvalidTx("the sender has no account", reason="unfunded_sender")
    account = decode(raw, Account, RECORD_BYTES_MAX, canonical=False)
    # A pool's two assets differ (genesis), so no asset is spent twice.
    for asset, amount in get_call_spend(state_view, tx.body.call):
        balance = compute_account_balance(account, asset)
        # Verify the sender holds what the call spends.
        if balance < amount:
            raise InvalidTx(f"balance {balance} of asset {asset} < {amount}",
                            reason="insufficient_balance")
