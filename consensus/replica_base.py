"""The replica's state and the helpers its transitions share (split from
``replica.py`` to keep modules small). Every state transition lives in
``replica.Replica``; this class only holds the state, reads it, signs and verifies.
"""

from __future__ import annotations

from consensus.actions import (
    Action,
    Broadcast,
    RequestSync,
    Send,
)
from consensus.certificate import (
    PHASE_COMMIT,
    PHASE_PREPARE,
    CommitCertificate,
    Verifier,
    primary_of,
    verify_certificate,
    vote_digest,
)
from consensus.checkpoints import CheckpointTracker
from consensus.kernel.codec import encode
from consensus.kernel.errors import ShardnetError, check
from consensus.messages import (
    CertNotice,
    Message,
    PrePrepare,
    ViewChange,
    Vote,
    signing_digest,
)
from consensus.state import PersistentState, ReplicaConfig, Signer, VoteRecord

VERIFY_CACHE_MAX = 8192
HEARTBEAT_EVERY = 4  # idle retransmit rounds between CERT heartbeats


class Reject(ShardnetError):
    """A message or event is dropped; ``reason`` is what the shell counts."""


class ReplicaBase:
    """State and helpers; every transition is in ``replica.Replica``."""

    def __init__(
        self,
        config: ReplicaConfig,
        signer: Signer,
        verify: Verifier,
        state: PersistentState | None = None,
        now_ms: int = 0,
    ) -> None:
        check(signer.public_key == config.validators[config.index], "signer is not validator")
        self.cfg = config
        self.me = config.index
        self._signer = signer
        self._verify_raw = verify
        self._verified: dict[bytes, None] = {}
        st = state if state is not None else PersistentState()
        self.view = st.view
        self.vote_floor = st.vote_floor
        self.vc_target: int | None = st.vote_floor if st.vote_floor > st.view else None
        self.committed_height = st.committed_height
        self.committed_hash = st.committed_hash
        self.last_cert = st.last_cert
        self.prepared = st.prepared
        self.prepared_payload = st.prepared_payload
        self.last_records: dict[int, VoteRecord | None] = {
            0: st.last_pre_prepare,
            PHASE_PREPARE: st.last_prepare,
            PHASE_COMMIT: st.last_commit,
        }
        self.ckpt = CheckpointTracker(config.n, config.f, config.quorum, st.checkpoint)
        self.now_ms = now_ms
        self.pre_prepares: dict[tuple[int, int], PrePrepare] = {}
        self.payloads: dict[bytes, tuple[int, bytes]] = {}
        self.executed: dict[tuple[int, bytes], bool | None] = {}
        # The parent each ExecuteBlock named: a result counts only on that parent.
        self.exec_parent: dict[tuple[int, bytes], bytes] = {}
        self.depth = config.pipeline_depth
        self.certs: dict[int, CommitCertificate] = {}
        self.votes: dict[tuple[int, int, int], dict[int, tuple[bytes, bytes]]] = {}
        self.my_votes: dict[tuple[int, int, int], bytes] = {}
        self.view_changes: dict[int, ViewChange] = {}
        self.my_vc: bytes | None = None
        self.vc_reason = "restart"
        self.new_view_msg: bytes | None = None
        self.committed_in_view = False
        self.consecutive_vc = 1 if self.vc_target is not None else 0
        self.slot_since_ms: int | None = None
        # The request timer (PROTOCOL.md 4.6): the oldest pending work the shell
        # reported, the latest such time the timer watched since it last started, and
        # when it last started. Only that oldest time moving forward (the work it
        # watched was served) restarts it, not any commit: a primary that commits
        # other work while leaving the oldest request out is still replaced.
        self.oldest_pending_ms: int | None = None
        self.request_watch_ms: int | None = None
        self.request_since_ms = now_ms
        self.vc_deadline: int | None = (
            now_ms + config.view_change_timeout_ms if self.vc_target is not None else None
        )
        self.retransmit_at = now_ms + config.retransmit_ms
        self.idle_rounds = 0
        self.sync_target = 0
        self.sync_deadline: int | None = None
        self.sync_peers: tuple[int, ...] = ()
        self.requested: tuple[int, int] | None = None
        self.helped_ms: dict[int, int] = {}
        self.cert_notice: tuple[int, bytes] | None = None
        self._timer: int | None = None
        self._out: list[Action] = []
        self._sends: list[Action] = []
        self._dirty = False

    def persistent_state(self) -> PersistentState:
        r = self.last_records
        return PersistentState(
            self.view, self.vote_floor, self.committed_height, self.committed_hash,
            self.last_cert, self.ckpt.stable, self.prepared, self.prepared_payload,
            r[0], r[PHASE_PREPARE], r[PHASE_COMMIT],
        )  # fmt: skip

    def primary(self, view: int | None = None) -> int:
        return primary_of(self.view if view is None else view, self.cfg.n)

    def certified(self, height: int, block_hash: bytes) -> bool:
        """Whether this replica holds a commit certificate for ``block_hash`` at
        ``height``: its ``ExecuteBlock`` then replays a committed block rather than
        answering a fresh PRE-PREPARE (the shell checks a fresh block's time against
        its clock, never a certified one's)."""
        cert = self.certs.get(height)
        return cert is not None and cert.block_hash == block_hash

    def wants_proposal(self) -> tuple[int, int] | None:
        """(height, view) this replica would propose now, or None.

        With ``pipeline_depth`` D the primary may propose up to D heights past its
        committed one, each on top of its own block in flight just below it (executed
        ok on the chain this replica holds)."""
        if (
            self.vc_target is not None
            or self.primary() != self.me
            or self.view < self.vote_floor
            or self.sync_target > self.committed_height
        ):
            return None
        for h in range(self.committed_height + 1, self.committed_height + self.depth + 1):
            if h > self.high_watermark() or h in self.certs:
                return None
            pp = self.pre_prepares.get((self.view, h))
            if pp is None:
                return h, self.view
            if self.executed_on(h, pp.block_hash) is not True:
                return None
        return None

    def chain_parent(self, height: int) -> bytes | None:
        """The block ``height`` extends on this replica's chain: the committed tip for
        the next height, else (pipelining) the block of this view's PRE-PREPARE at
        ``height - 1`` once it executed ok on its own parent; None when unknown."""
        if height == self.committed_height + 1:
            return self.committed_hash
        if height <= self.committed_height or height > self.committed_height + self.depth:
            return None
        pp = self.pre_prepares.get((self.view, height - 1))
        if pp is None or self.executed_on(height - 1, pp.block_hash) is not True:
            return None
        return pp.block_hash

    def executed_on(self, height: int, block_hash: bytes) -> bool | None:
        """The ledger's verdict on ``block_hash`` at ``height`` on the parent this chain
        has now (None: not executed there, or the answer is pending)."""
        key = (height, block_hash)
        status = self.executed.get(key)
        if status is None:
            return None
        parent = self.chain_parent(height)
        if parent is None or self.exec_parent.get(key) != parent:
            return None
        return status

    def high_watermark(self) -> int:
        return self.ckpt.stable.height + self.cfg.watermark_window

    def next_deadline(self) -> int:
        deadlines = [self.retransmit_at]
        if self.vc_target is not None and self.vc_deadline is not None:
            deadlines.append(self.vc_deadline)
        progress = self._progress_deadline()
        if progress is not None:
            deadlines.append(progress)
        if self.sync_deadline is not None:
            deadlines.append(self.sync_deadline)
        return min(deadlines)

    def _verify(self, public_key: bytes, digest: bytes, signature: bytes) -> bool:
        key = public_key + digest + signature
        if key in self._verified:
            return True
        if not self._verify_raw(public_key, digest, signature):
            return False
        if len(self._verified) >= VERIFY_CACHE_MAX:
            self._verified.clear()
        self._verified[key] = None
        return True

    def _authenticate(self, msg: Message) -> None:
        digest = signing_digest(self.cfg.chain_id, msg)
        if not self._verify(self.cfg.validators[msg.sender], digest, msg.signature):
            raise Reject(type(msg).__name__, reason="bad_signature")

    def _backoff(self, exponent: int) -> int:
        return 1 << max(0, min(exponent, self.cfg.backoff_exponent_max))

    def _progress_deadline(self) -> int | None:
        """When this replica suspects the primary (``request_timeout``): a slot whose
        PRE-PREPARE has not committed, or the oldest pending work not served, for the
        request timeout (doubled per view change since the last commit)."""
        if self.vc_target is not None:
            return None
        starts = []
        if self.slot_since_ms is not None:
            starts.append(self.slot_since_ms)
        if self.oldest_pending_ms is not None:
            starts.append(max(self.oldest_pending_ms, self.request_since_ms))
        if not starts:
            return None
        return min(starts) + self.cfg.request_timeout_ms * self._backoff(self.consecutive_vc)

    def _watch_pending(self, oldest_ms: int | None) -> None:
        """The shell's oldest pending time, from a ``Tick``. An empty pool idles the
        request timer (it counts from now, or from the work's arrival if later); the
        timer restarts when the oldest time moved past the one it watched (that work
        was served: it left the pool). An older time (a transaction that became
        runnable behind a commit) keeps the running timer: no one can restart it by
        making older work runnable, only by serving the oldest."""
        watched = self.request_watch_ms
        if oldest_ms is None:
            self.request_watch_ms = None
            self.request_since_ms = self.now_ms
        elif watched is None or oldest_ms > watched:
            if watched is not None:
                self.request_since_ms = self.now_ms
            self.request_watch_ms = oldest_ms
        self.oldest_pending_ms = oldest_ms

    def _restart_request_timer(self) -> None:
        """A new view (or a view change given up because the view progresses): the
        oldest pending work gets a full request timeout from now."""
        self.request_since_ms = self.now_ms
        self.request_watch_ms = self.oldest_pending_ms

    def _broadcast(self, data: bytes) -> None:
        self._sends.append(Broadcast(data))

    def _sign_vote(self, phase: int, view: int, height: int, block_hash: bytes) -> Vote:
        digest = vote_digest(self.cfg.chain_id, self.cfg.shard, view, height, block_hash, phase)
        return Vote(
            self.cfg.shard, phase, view, height, block_hash, self.me, self._signer.sign(digest)
        )

    def _may_sign(self, kind: int, view: int, height: int, block_hash: bytes) -> bool:
        """Never sign two different blocks for one (view, height), nor go back."""
        last = self.last_records[kind]
        if last is not None:
            if (view, height) < (last.view, last.height):
                return False
            if (view, height) == (last.view, last.height):
                return last.block_hash == block_hash
        self.last_records[kind] = VoteRecord(view, height, block_hash)
        self._dirty = True
        return True

    def _help_lagging(self, sender: int, their_view: int | None, their_height: int | None) -> None:
        """A peer's authentic message shows it behind: push what lets it catch up."""
        if self.now_ms - self.helped_ms.get(sender, -(10**12)) < self.cfg.retransmit_ms:
            return
        sent = False
        if their_view is not None and their_view < self.view and self.new_view_msg is not None:
            self._sends.append(Send(sender, self.new_view_msg))
            sent = True
        if their_height is not None and their_height <= self.committed_height:
            notice = self._cert_notice()
            if notice is not None:
                self._sends.append(Send(sender, notice))
                sent = True
        if sent:
            self.helped_ms[sender] = self.now_ms

    def _cert_notice(self) -> bytes | None:
        if self.last_cert is None:
            return None
        if self.cert_notice is None or self.cert_notice[0] != self.committed_height:
            unsigned = CertNotice(self.cfg.shard, self.me, self.last_cert, b"")
            sig = self._signer.sign(signing_digest(self.cfg.chain_id, unsigned))
            data = encode(CertNotice(self.cfg.shard, self.me, self.last_cert, sig))
            self.cert_notice = (self.committed_height, data)
        return self.cert_notice[1]

    def _valid_synced(self, cert: object, height: int, block_hash: bytes) -> bool:
        cfg = self.cfg
        return isinstance(cert, CommitCertificate) and verify_certificate(
            cert, cfg.chain_id, cfg.shard, height, block_hash, cfg.validators, self._verify
        )

    def _valid_cert(self, cert: CommitCertificate) -> bool:
        cfg = self.cfg
        return verify_certificate(
            cert, cfg.chain_id, cfg.shard, cert.height, cert.block_hash, cfg.validators,
            self._verify,
        )  # fmt: skip

    def _matching(self, phase: int, view: int, height: int, block_hash: bytes) -> dict[int, bytes]:
        box = self.votes.get((phase, view, height), {})
        return {s: sig for s, (d, sig) in box.items() if d == block_hash}

    def _build_view_change(self, new_view: int) -> ViewChange:
        cfg = self.cfg
        prepared = self.prepared
        if prepared is not None and prepared.height != self.committed_height + 1:
            prepared = None
        payload = self.prepared_payload if prepared is not None else b""
        unsigned = ViewChange(
            cfg.shard, new_view, self.me, self.ckpt.stable, self.last_cert, prepared, b""
        )
        sig = self._signer.sign(signing_digest(cfg.chain_id, unsigned))
        return ViewChange(
            cfg.shard, new_view, self.me, self.ckpt.stable, self.last_cert, prepared, sig,
            payload,
        )  # fmt: skip

    def _request_sync(
        self, to_height: int, force: bool = False, holders: tuple[int, ...] = ()
    ) -> None:
        """Ask the shell for certified blocks up to ``to_height``; ``holders`` (signers of
        a certificate for it) are the peers hinted first."""
        if to_height <= self.committed_height:
            return
        hinted = tuple(i for i in holders if i != self.me)
        if hinted and to_height >= self.sync_target:
            self.sync_peers = hinted
        outstanding = self.sync_deadline is not None and self.sync_target >= to_height
        if outstanding and not force:
            return
        self.sync_target = max(self.sync_target, to_height)
        self.sync_deadline = self.now_ms + self.cfg.sync_timeout_ms
        others = tuple(i for i in range(self.cfg.n) if i != self.me)
        peers = self.sync_peers or others
        self._out.append(RequestSync(self.committed_height + 1, self.sync_target, peers))


def without_payload(vc: ViewChange) -> ViewChange:
    return ViewChange(
        vc.shard, vc.new_view, vc.sender, vc.checkpoint, vc.last_commit, vc.prepared,
        vc.signature,
    )  # fmt: skip
