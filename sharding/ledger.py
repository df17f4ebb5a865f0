"""The ledger as a replica drives it: committed state, speculative execution, commits.

Consensus hands the replica opaque block bytes; this module decodes them, checks
what the ledger decides (hash, height, parent, proposer and time (``header_rules``),
inbound evidence, roots), and keeps
each block's execution result until the block commits, so a replica executes a
block once. Pipelining (issue 16): a block may also be executed or proposed on an
uncommitted parent this ledger executed ok (``parent``), over a ``SpeculativeState``
(the committed state with the write sets of the blocks in flight below); its result is
kept under (block hash, parent hash) and reused at commit only when that parent is
then the committed tip; a block that loses its height drops its descendants.
It also keeps the audit's running totals (per-asset balances and pool
reserves at the committed height), updated from each commit's write set.
All methods are synchronous and CPU-bound: the node runs them on its ledger
worker thread, one at a time, never on the event loop; the multi-shard simulator
calls them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, cast

from consensus.certificate import Verifier, primary_of
from consensus.kernel.codec import decode, encode
from consensus.kernel.crypto import verify_signature
from consensus.kernel.errors import DecodeError, ShardnetError, check
from consensus.kernel.limits import RECORD_BYTES_MAX
from sharding.audit import compute_state_totals
from sharding.block import GENESIS_PREV_HASH, Block, block_hash, decode_block
from sharding.crossshard import (
    ProvenReceipt,
    Validators,
    VerifiedSources,
    attach_evidence,
    check_block_evidence,
)
from sharding.executor import (
    BlockResult,
    InvalidBlock,
    Rejected,
    apply_block,
    build_block,
    commit_block_result,
    compute_bad_signatures,
)
from sharding.farms import Farm, get_liquidity_of
from sharding.genesis import Genesis, genesis_state
from sharding.header_rules import check_header_fields, check_time_not_ahead, next_time_ms
from sharding.lending import get_position_report
from sharding.parallel import ParallelExecutor
from sharding.records import (
    KEY_ACCOUNT,
    KEY_FARM,
    KEY_MARKET,
    KEY_POOL,
    MARKET_KEY_BYTES,
    Account,
    Market,
    Pool,
    get_account,
    get_in_cursor,
    get_nonce,
    get_out_seq,
    get_received,
    get_sent,
)
from sharding.state import SpeculativeState, State, StateReader
from sharding.tx import (
    InvalidTx,
    SignedTx,
    check_tx_nonce,
    check_tx_stateless,
    decode_tx,
    stateless_passed,
    tx_hash,
)
from sharding.verified import VerifiedTxs

SPECULATIVE_RESULTS_MAX = 16
NONCES_REMEMBERED_MAX = 200_000  # senders whose committed nonce is remembered (per version)


@dataclass(frozen=True, slots=True)
class Proposal:
    block: Block
    payload: bytes
    block_hash: bytes
    result: BlockResult
    rejected: list[Rejected]
    inbound_refused: str = ""  # why the offered inbound receipts were left out, if they were


@dataclass(frozen=True, slots=True)
class _Executed:
    """A block this ledger executed ok on ``parent`` (the committed tip then, or a block
    in flight below it), kept until it commits or loses its height."""

    height: int
    block: Block
    result: BlockResult
    parent: bytes


@dataclass(frozen=True, slots=True)
class Committed:
    height: int
    block: Block
    block_hash: bytes
    result: BlockResult


class Ledger:
    def __init__(self, genesis: Genesis, shard: int, state: State | None = None,
                 height: int = 0, tip_hash: bytes = GENESIS_PREV_HASH,
                 block_bytes_max: int = 8 * 1024 * 1024,
                 tip_time_ms: int | None = None,
                 executor: ParallelExecutor | None = None,
                 verify: Verifier = verify_signature) -> None:
        self.genesis = genesis
        self.shard = shard
        self.state = state if state is not None else genesis_state(genesis, shard)
        self.height = height
        self.tip_hash = tip_hash
        # The tip's header time (genesis_time_ms before height 1): the next block's
        # time_ms must be above it (sharding/header_rules.py).
        check(tip_time_ms is not None or height == 0,
              "a ledger opened above genesis needs its tip's time_ms")
        self.tip_time_ms = genesis.genesis_time_ms if tip_time_ms is None else tip_time_ms
        self.block_bytes_max = block_bytes_max
        # (block hash, parent hash) -> what executing it there gave.
        self._speculative: dict[tuple[bytes, bytes], _Executed] = {}
        self.verified = VerifiedTxs()
        self.validators = Validators(
            genesis.chain_id,
            [[v.public_key for v in shard_validators] for shard_validators in genesis.validators],
            verify,
        )
        self.verified_sources = VerifiedSources()
        # ``committed_nonce``'s answers for one version of one state.
        self._nonces: dict[bytes, int] = {}
        self._nonces_of: State | None = None
        self._nonces_version = -1
        # The audit's running totals at the committed height (one pass now, then deltas).
        self.balances, self.reserves = compute_state_totals(self.state)
        # The parallel executor (issue 7) gives the spec's results; None runs the spec.
        self._build_block = build_block if executor is None else executor.build_block
        self._apply_block = apply_block if executor is None else executor.apply_block
        self._compute_bad_signatures = (
            compute_bad_signatures if executor is None else executor.compute_bad_signatures)

    # -- admission (mempool) ---------------------------------------------------

    def admit(self, raw: bytes) -> SignedTx:
        """Decode and check a submitted transaction; raise ``ShardnetError`` with a reason."""
        tx = decode_tx(raw)
        digest = tx_hash(tx)
        # A copy that arrives after its block was validated (a peer's forwarded batch
        # racing the PRE-PREPARE: 5-10 % of a replica's transactions under load) is
        # not verified twice.
        known = self.verified.holds(tx, digest)
        params = (self.genesis.chain_id, self.shard, self.genesis.num_shards)
        if known:
            stateless_passed.check(tx, digest, *params)
            return tx
        check_tx_stateless(tx, *params, verify_signatures=True)
        # Passed: its block skips these checks (``stateless_passed``).
        stateless_passed.remember(tx, digest, *params)
        self.verified.add(tx, digest)
        return tx

    def _check_unverified(self, txs: list[SignedTx],
                          digests: list[bytes] | None = None) -> set[int]:
        """Verify the signatures not in the cache; remember the good ones; return the
        ``id`` of each forged transaction. ``digests``: the transactions' hashes when
        the caller has them (the mempool's keys), so none is hashed here."""
        hashes = [tx_hash(tx) for tx in txs] if digests is None else digests
        unchecked = [(tx, digest) for tx, digest in zip(txs, hashes, strict=True)
                     if not self.verified.holds(tx, digest)]
        if not unchecked:
            return set()

        def verify(batch: list[SignedTx]) -> list[bool]:
            bad = set(self._compute_bad_signatures(batch))
            return [index not in bad for index in range(len(batch))]

        verdicts = self.verified.check_once([tx for tx, _ in unchecked],
                                            [digest for _, digest in unchecked], verify)
        return {id(tx) for (tx, _), verified in zip(unchecked, verdicts, strict=True)
                if not verified}

    def committed_nonce(self, sender: bytes) -> int:
        """The sender's next nonce on the committed state. Remembered until the state
        moves (a commit bumps its version after writing): the mempool asks for each
        transaction it takes and for every sender it holds (``ready``, ``expire``), on
        the event loop, and each answer used to decode the sender's account record."""
        state = self.state
        version = state.version
        if self._nonces_of is not state or self._nonces_version != version:
            self._nonces = {}
            self._nonces_of, self._nonces_version = state, version
        nonces = self._nonces
        nonce = nonces.get(sender)
        if nonce is None:
            if len(nonces) >= NONCES_REMEMBERED_MAX:
                nonces.clear()
            nonce = nonces[sender] = get_nonce(state, sender)
        return nonce

    def account(self, address: bytes) -> dict[str, Any]:
        account = get_account(self.state, address)
        return {
            "nonce": account.nonce,
            "balances": {self.genesis.asset_name(b.asset): b.amount for b in account.balances},
            **self._liquidity(address),
        }

    def _liquidity(self, address: bytes) -> dict[str, Any]:
        """``{"liquidity": {pool: {lp_shares, staked, pending_reward, reward_asset}}}``
        for the pools of this shard the account holds or stakes in (none: {})."""
        found: dict[str, dict[str, Any]] = {
            name: dict(entry) for name, entry in get_liquidity_of(
                self.state, ((p.name, p.address) for p in self.genesis.pools), address,
                self.height).items()}
        for entry in found.values():
            if "reward_asset" in entry:
                entry["reward_asset"] = self.genesis.asset_name(entry["reward_asset"])
        return {"liquidity": found} if found else {}

    def lending(self, address: bytes) -> dict[str, Any] | None:
        """``address``'s lending position and the markets, as the next block would see
        them (interest and prices accrued to it); None off the lending shard."""
        return get_position_report(self.state, address, self.height + 1)

    def in_cursor(self, src_shard: int) -> int:
        return get_in_cursor(self.state, src_shard)

    # -- the chain in flight (pipelining) ----------------------------------------

    def _executed(self, digest: bytes) -> _Executed | None:
        """The block ``digest`` executed ok on a chain that reaches the committed tip."""
        for (block, _), entry in self._speculative.items():
            if block == digest and (entry.parent == self.tip_hash
                                    or self._executed(entry.parent) is not None):
                return entry
        return None

    def _view_on(self, parent: bytes) -> tuple[StateReader, int, int] | None:
        """(state, height, header time) of ``parent``: the committed tip, or a block in
        flight that this ledger executed ok on a chain reaching the tip; None if not."""
        if parent in (b"", self.tip_hash):
            return self.state, self.height, self.tip_time_ms
        chain: list[_Executed] = []
        digest = parent
        while digest != self.tip_hash:
            entry = self._executed(digest)
            if entry is None:
                return None
            chain.append(entry)
            digest = entry.parent
        writes: dict[bytes, bytes | None] = {}
        for entry in reversed(chain):
            writes.update(entry.result.writes)
        top = chain[0]
        return (SpeculativeState(self.state, writes, len(chain)), top.height,
                top.block.header.time_ms)

    def state_on(self, parent: bytes) -> StateReader | None:
        """The state after ``parent`` (the tip, or a block in flight executed ok here)."""
        view = self._view_on(parent)
        return None if view is None else view[0]

    def nonce_on(self, parent: bytes, sender: bytes) -> int:
        """``sender``'s next nonce after ``parent`` (the committed one if unknown)."""
        return get_nonce(self.state_on(parent) or self.state, sender)

    def in_cursor_on(self, parent: bytes, src_shard: int) -> int:
        """The inbound cursor from ``src_shard`` after ``parent`` (committed if unknown)."""
        return get_in_cursor(self.state_on(parent) or self.state, src_shard)

    def audit_totals(self) -> dict[str, Any]:
        """This shard's part of the audit (PROTOCOL.md section 6) at the committed tip:
        O(assets + channels), from the running totals and the channel counters.
        Run on the ledger thread: it must not interleave with a commit."""
        others = [s for s in range(self.genesis.num_shards) if s != self.shard]
        assets = sorted(self.genesis.assets.values())
        return {
            "shard": self.shard, "height": self.height, "state_root": self.state.root.hex(),
            "balances": {str(a): n for a, n in sorted(self.balances.items()) if n},
            "reserves": {str(a): n for a, n in sorted(self.reserves.items()) if n},
            "out_seq": {str(d): get_out_seq(self.state, d) for d in others},
            "in_cursor": {str(s): get_in_cursor(self.state, s) for s in others},
            "sent": {str(d): {str(a): get_sent(self.state, d, a) for a in assets}
                     for d in others},
            "received": {str(s): {str(a): get_received(self.state, s, a) for a in assets}
                         for s in others},
        }

    def _update_totals(self, writes: dict[bytes, bytes | None]) -> None:
        """Apply a commit's write set to the running totals (before the state changes)."""
        for key, value in writes.items():
            prefix = key[:1]
            if prefix == KEY_ACCOUNT:
                for raw, sign in ((self.state.get(key), -1), (value, 1)):
                    if raw is not None:
                        for b in decode(raw, Account, RECORD_BYTES_MAX, canonical=False).balances:
                            self.balances[b.asset] = self.balances.get(b.asset, 0) + sign * b.amount
            elif prefix == KEY_POOL:
                for raw, sign in ((self.state.get(key), -1), (value, 1)):
                    if raw is not None:
                        pool = decode(raw, Pool, RECORD_BYTES_MAX, canonical=False)
                        for asset, amount in ((pool.asset_a, pool.reserve_a),
                                              (pool.asset_b, pool.reserve_b)):
                            self.reserves[asset] = self.reserves.get(asset, 0) + sign * amount
            elif prefix == KEY_FARM:  # a farm's holdings count as reserves (audit.py)
                for raw, sign in ((self.state.get(key), -1), (value, 1)):
                    if raw is not None:
                        farm = decode(raw, Farm, RECORD_BYTES_MAX, canonical=False)
                        self.reserves[farm.reward_asset] = (
                            self.reserves.get(farm.reward_asset, 0) + sign * farm.rewards)
            elif prefix == KEY_MARKET and len(key) == MARKET_KEY_BYTES:  # a market's cash
                for raw, sign in ((self.state.get(key), -1), (value, 1)):
                    if raw is not None:
                        market = decode(raw, Market, RECORD_BYTES_MAX, canonical=False)
                        self.reserves[market.asset] = (
                            self.reserves.get(market.asset, 0) + sign * market.cash)

    # -- proposing ---------------------------------------------------------------

    def propose(self, txs: list[SignedTx], inbound: list[ProvenReceipt], *, height: int,
                view: int, time_ms: int, proposer: int, txs_max: int,
                tx_hashes: list[bytes] | None = None, parent: bytes = b"") -> Proposal:
        """Build the next block from mempool candidates and proven inbound receipts (the
        pool's gap-free selection), with the receipts' evidence attached.

        ``proposer`` must be the primary of ``view``; the header's time is ``time_ms``
        (the primary's clock) or, if that is not after the tip's time, the tip's + 1.
        ``tx_hashes``: the candidates' hashes (the mempool's keys), to look the
        verified signatures up without hashing each candidate again.
        ``parent``: the block to build on (pipelining: the primary's own block in flight
        at ``height - 1``, executed ok here); empty for the committed tip."""
        on = self._view_on(parent)
        check(on is not None, f"proposal on unknown parent {parent.hex()}")
        assert on is not None
        state, parent_height, parent_time_ms = on
        check(height == parent_height + 1, f"proposal for {height} on {parent_height}")
        check(proposer == self._primary(view), f"proposer {proposer} in view {view}")
        prev_hash = self.tip_hash if parent in (b"", self.tip_hash) else parent
        time_ms = next_time_ms(parent_time_ms, time_ms)
        # Verify every candidate's signature (cached or now); forged ones never get in.
        forged = self._check_unverified(txs, tx_hashes)
        candidates = [tx for tx in txs if id(tx) not in forged]
        refused = ""
        try:
            block, result, rejected = self._build(state, prev_hash, candidates, inbound, height,
                                                  view, time_ms, proposer, txs_max)
        except InvalidBlock as exc:
            # Only a receipt the source shard should never have certified gets here (a
            # credit past u64): propose without inbound receipts, say why.
            if not inbound:
                raise
            refused = f"{exc.reason}: {exc.detail}"
            block, result, rejected = self._build(state, prev_hash, candidates, [], height,
                                                  view, time_ms, proposer, txs_max)
        rejected = [*rejected, *(Rejected(tx, "bad_signature") for tx in txs
                                 if id(tx) in forged)]
        digest = block_hash(block)
        self._remember(digest, prev_hash, height, block, result)
        return Proposal(block, encode(block), digest, result, rejected, refused)

    def _build(self, state: StateReader, prev_hash: bytes, txs: list[SignedTx],
               inbound: list[ProvenReceipt], height: int, view: int,
               time_ms: int, proposer: int, txs_max: int
               ) -> tuple[Block, BlockResult, list[Rejected]]:
        # A SpeculativeState offers what the executors use of a State (get, overlay,
        # prepare): they read and prepare, never apply.
        block, result, rejected = self._build_block(
            cast(State, state), txs, [item.receipt for item in inbound], height=height,
            view=view, prev_hash=prev_hash, time_ms=time_ms, proposer=proposer, txs_max=txs_max,
            verify_signatures=False, receipts_max=max(len(inbound), 1),
        )
        if block.inbound:
            block = attach_evidence(block, {item.channel_seq: item for item in inbound})
        return block, result, rejected

    def _primary(self, view: int) -> int:
        return primary_of(view, len(self.genesis.validators[self.shard]))

    def _check_header(self, block: Block, previous_ms: int | None = None) -> None:
        """Proposer and time after ``previous_ms`` (the parent's; default the tip's)
        (deterministic; ``InvalidBlock`` with the reason)."""
        check_header_fields(block.header, validators=len(self.genesis.validators[self.shard]),
                            previous_ms=self.tip_time_ms if previous_ms is None else previous_ms)

    # -- validating a pre-prepare --------------------------------------------------

    def execute(self, payload: bytes, expected_hash: bytes, height: int, view: int,
                *, now_ms: int | None = None, time_ahead_max_ms: int = 0,
                parent: bytes = b"") -> str:
        """Execute a proposed block speculatively; return "" when it is valid, else why not.

        ``now_ms`` is the replica's wall clock when the block is a fresh proposal (the
        node's driver passes it for a PRE-PREPARE): the header's time may then be at
        most ``time_ahead_max_ms`` past it. None (a certified block being synced or
        replayed) skips that check: validity never depends on when a block is replayed.
        ``parent`` (pipelining): the block in flight at ``height - 1`` to execute on, which
        this ledger must have executed ok on a chain reaching its tip (else
        ``unknown_parent``); empty means the committed tip."""
        try:
            block = decode_block(payload, self.block_bytes_max)
        except DecodeError as exc:
            return f"malformed: {exc.detail}"
        digest = block_hash(block)
        header = block.header
        # Verify the payload is the block the PRE-PREPARE names.
        if digest != expected_hash:
            return "block_hash_mismatch"
        # Verify the block extends its parent (our committed tip, or a block in flight
        # we executed ok on a chain reaching it) at the agreed height.
        on = self._view_on(parent)
        if on is None:
            return f"unknown_parent: {parent.hex()}"
        state, parent_height, parent_time_ms = on
        if header.height != height or height != parent_height + 1:
            return f"wrong_height: header {header.height}, slot {height}, tip {parent_height}"
        prev_hash = self.tip_hash if parent in (b"", self.tip_hash) else parent
        if header.prev_hash != prev_hash:
            return "wrong_prev_hash"
        # Verify the header's view is not from the future.
        if header.view > view:
            return "header_view_ahead"
        try:
            # Verify the proposer is the view's primary and the time increases.
            self._check_header(block, parent_time_ms)
            # A fresh proposal: verify its time is not far ahead of our clock.
            if now_ms is not None:
                check_time_not_ahead(header, now_ms=now_ms, ahead_max_ms=time_ahead_max_ms)
        except InvalidBlock as exc:
            return f"{exc.reason}: {exc.detail}"
        if (digest, prev_hash) in self._speculative:
            return ""
        # Verify every transaction's signature (cached from admission, or now).
        if self._check_unverified(list(block.txs)):
            return "invalid_tx: bad signature"
        try:
            # Verify every inbound receipt is proven by a certified source block.
            check_block_evidence(block, self.validators, self.verified_sources)
            result = self._apply_block(cast(State, state), block, verify_signatures=False)
        except InvalidBlock as exc:
            return f"{exc.reason}: {exc.detail}"
        except Exception as exc:  # an untrusted payload can only be invalid, never a crash
            return f"execution_error: {type(exc).__name__}: {exc}"
        self._remember(digest, prev_hash, height, block, result)
        return ""

    # -- committing ---------------------------------------------------------------------

    def commit(self, payload: bytes, digest: bytes, height: int) -> Committed:
        """Apply a committed block (executing it now if it was not executed before)."""
        check(height == self.height + 1, f"commit of {height} on tip {self.height}")
        cached = self._speculative.pop((digest, self.tip_hash), None)
        if cached is not None and cached.result.prepared.version == self.state.version:
            block, result = cached.block, cached.result
        elif cached is not None:
            # (Pipelining: a result on a parent that committed since carries the prepared
            # root for this version and was taken above.) Executed on this tip but
            # prepared for another version: the write set stands (computed on exactly
            # this state); the root's nodes are prepared again and must give the
            # header's root.
            block = cached.block
            prepared = self.state.prepare(cached.result.writes)
            check(prepared.root == block.header.state_root,
                  "state root of a pipelined block differs on its committed parent")
            result = replace(cached.result, prepared=prepared)
        else:
            block = decode_block(payload, self.block_bytes_max)
            check(block_hash(block) == digest, "committed payload does not hash to its digest")
            try:
                self._check_header(block)
                check_block_evidence(block, self.validators, self.verified_sources)
                # A block whose signatures this node all verified already (admission,
                # an earlier execute) is not verified again; any other is verified
                # whole, overlapped with its execution (the parallel executor).
                known = all(self.verified.holds(tx) for tx in block.txs)
                result = self._apply_block(self.state, block, verify_signatures=not known)
            except InvalidBlock as exc:
                # A certified block that our ledger rejects: we diverge; halt loudly.
                raise ShardnetError(f"certified block {height} invalid here: {exc.reason}",
                                    reason="divergence") from exc
        self._update_totals(result.writes)
        commit_block_result(self.state, result)
        check(self.state.root == block.header.state_root, "state root after commit differs")
        self.height = height
        self.tip_hash = digest
        self.tip_time_ms = block.header.time_ms
        self._prune()
        return Committed(height, block, digest, result)

    def _prune(self) -> None:
        """Keep only results on the new tip's chain: a block that lost its height (a
        view change committed another) invalidates everything executed on it."""
        alive = {self.tip_hash}
        kept: dict[tuple[bytes, bytes], _Executed] = {}
        for key, entry in sorted(self._speculative.items(), key=lambda item: item[1].height):
            if entry.height > self.height and entry.parent in alive:
                kept[key] = entry
                alive.add(key[0])
        self._speculative = kept

    def _remember(self, digest: bytes, parent: bytes, height: int, block: Block,
                  result: BlockResult) -> None:
        if len(self._speculative) >= SPECULATIVE_RESULTS_MAX:
            self._speculative.pop(next(iter(self._speculative)))
        self._speculative[(digest, parent)] = _Executed(height, block, result, parent)


__all__ = ["Committed", "InvalidTx", "Ledger", "Proposal", "check_tx_nonce"]
