"""The PBFT replica: one synchronous state machine, ``step(event) -> list[Action]``.

Castro and Liskov (OSDI 1999, TOCS 2002) with the project's rules (PROTOCOL.md 4):
execute-then-vote (PREPARE only after the ledger's roots match the header), commit
certificates of 2f+1 COMMIT signatures, checkpoints every K heights, view change with
prepared certificates and exponential backoff, catch-up by certified block sync.
Pipelining (``ReplicaConfig.pipeline_depth`` D, default 1 = none): PRE-PREPARE and
PREPARE run for up to D heights past the committed one, height h executed on the block
in flight at h-1; a COMMIT for h is sent only once h-1 is committed here, so a block is
only ever committed one height above a committed one (docs/CONSENSUS.md, "Pipelining").

This module owns every state transition; messages, certificates, checkpoints and the
NEW-VIEW rule live in their own modules. Nothing from the wire can make ``step`` raise:
a bad message becomes ``Dropped(reason)``. ``InvariantViolation`` (our own state is
broken) propagates: the shell halts the replica.
"""

from __future__ import annotations

from consensus.actions import (
    Action,
    CommitBlock,
    Dropped,
    ExecuteBlock,
    Persist,
    RequestProposal,
    SetTimer,
    ViewChangeStarted,
    ViewInstalled,
)
from consensus.certificate import (
    PHASE_CHECKPOINT,
    PHASE_COMMIT,
    PHASE_PREPARE,
    CommitCertificate,
    PreparedCertificate,
    pre_prepare_digest,
    sorted_signatures,
)
from consensus.events import BlockExecuted, Event, MessageReceived, ProposalReady, SyncResult, Tick
from consensus.kernel.codec import encode
from consensus.kernel.errors import DecodeError, InvariantViolation, ShardnetError, check
from consensus.messages import (
    CertNotice,
    NewView,
    PrePrepare,
    ViewChange,
    Vote,
    decode_message,
    payload_digest,
    signing_digest,
)
from consensus.replica_base import HEARTBEAT_EVERY, Reject, ReplicaBase, without_payload
from consensus.viewchange import (
    NewViewPlan,
    check_new_view,
    check_view_change,
    commit_height,
    plan_new_view,
)


class Replica(ReplicaBase):
    """``step(event) -> list[Action]``; see the module docstring."""

    # ----------------------------------------------------------------- interface
    def step(self, event: Event) -> list[Action]:
        self._out, self._sends, self._dirty = [], [], False
        try:
            if isinstance(event, MessageReceived):
                self._on_message(event)
            elif isinstance(event, Tick):
                self._on_tick(event)
            elif isinstance(event, ProposalReady):
                self._on_proposal(event)
            elif isinstance(event, BlockExecuted):
                self._on_executed(event)
            elif isinstance(event, SyncResult):
                self._on_sync(event)
            else:
                raise Reject(type(event).__name__, reason="unknown_event")
        except InvariantViolation:
            raise
        except ShardnetError as exc:
            sender = getattr(event, "sender_index", None)
            self._out.append(Dropped(exc.reason, exc.detail, sender))
        actions = self._out
        if self._dirty:
            actions.append(Persist(self.persistent_state()))
        actions.extend(self._sends)
        deadline = self.next_deadline()
        if deadline != self._timer:
            self._timer = deadline
            actions.append(SetTimer(deadline))
        return actions

    # ----------------------------------------------------------------- messages
    def _on_message(self, event: MessageReceived) -> None:
        try:
            msg = decode_message(event.data, self.cfg.message_bytes_max)
        except DecodeError as exc:
            raise Reject(exc.detail, reason=exc.reason) from None
        if msg.shard != self.cfg.shard:
            raise Reject(f"shard {msg.shard}", reason="wrong_shard")
        if msg.sender >= self.cfg.n:
            raise Reject(f"sender {msg.sender}", reason="not_validator")
        # A NEW-VIEW is relayed on purpose (``_help_lagging`` passes the primary's on to
        # a replica left in an older view): its primary's signature authenticates it,
        # the link it came on is only the transport. Everything else must come from
        # its signer's own link.
        relayed = isinstance(msg, NewView)
        if event.sender_index is not None and event.sender_index != msg.sender and not relayed:
            raise Reject(f"claims {msg.sender}", reason="wrong_sender")
        if msg.sender == self.me:
            raise Reject("own message", reason="replayed_own")
        if isinstance(msg, Vote):
            self._on_vote(msg)
        elif isinstance(msg, PrePrepare):
            self._on_pre_prepare(msg)
        elif isinstance(msg, ViewChange):
            self._on_view_change(msg)
        elif isinstance(msg, NewView):
            self._on_new_view(msg, event.data)
        else:
            self._on_cert_notice(msg)

    def _check_normal_view(self, msg: PrePrepare | Vote) -> None:
        if msg.view < self.view:
            self._authenticate(msg)
            self._help_lagging(msg.sender, msg.view, msg.height)
            raise Reject(f"view {msg.view} < {self.view}", reason="wrong_view")
        if self.vc_target is not None:
            raise Reject(f"changing to {self.vc_target}", reason="in_view_change")
        if msg.view > self.view:
            raise Reject(f"view {msg.view} > {self.view}", reason="future_view")
        if msg.height > self.high_watermark():
            raise Reject(f"height {msg.height}", reason="above_watermark")

    def _on_pre_prepare(self, pp: PrePrepare) -> None:
        if pp.sender != self.primary(pp.view):
            raise Reject(f"{pp.sender} is not primary of {pp.view}", reason="not_primary")
        self._check_normal_view(pp)
        if pp.height <= self.committed_height:
            self._authenticate(pp)
            if pp.height == self.committed_height and pp.block_hash == self.committed_hash:
                # A re-proposal of our own last commit: vote, the others may need us.
                self._vote_committed(pp)
            else:
                self._help_lagging(pp.sender, None, pp.height)
            raise Reject(f"height {pp.height}", reason="stale")
        held = self.pre_prepares.get((pp.view, pp.height))
        if held is not None:
            if held.block_hash == pp.block_hash:
                raise Reject("pre-prepare", reason="duplicate")
            self._authenticate(pp)
            self._start_view_change(self.view + 1, "equivocation")
            raise Reject(f"two blocks at height {pp.height}", reason="equivocation")
        self._authenticate(pp)
        if payload_digest(pp.payload) != pp.payload_hash:
            raise Reject("payload does not match signed hash", reason="bad_payload")
        prev = pp.prev_cert
        if (
            prev is not None
            and prev.height == pp.height - 1
            and prev.height > self.committed_height
        ):
            if self._valid_cert(prev):
                self._on_certificate(prev)
            else:
                self._out.append(Dropped("bad_certificate", "prev_cert", pp.sender))
        self._accept_pre_prepare(pp)

    def _accept_pre_prepare(self, pp: PrePrepare) -> None:
        self.pre_prepares[(pp.view, pp.height)] = pp
        # Keep the first payload: a later one for the same hash may be a forgery.
        self.payloads.setdefault(pp.block_hash, (pp.height, pp.payload))
        if pp.height > self.committed_height + self.depth:
            self._request_sync(pp.height - self.depth)
        self._advance()

    def _vote_committed(self, pp: PrePrepare) -> None:
        for phase in (PHASE_PREPARE, PHASE_COMMIT):
            if phase == PHASE_PREPARE and pp.sender == self.me:
                continue
            self._send_vote(phase, pp.view, pp.height, pp.block_hash)

    def _on_vote(self, vote: Vote) -> None:
        if vote.phase == PHASE_CHECKPOINT:
            self._on_checkpoint(vote)
            return
        self._check_normal_view(vote)
        if vote.height <= self.committed_height:
            self._authenticate(vote)
            self._help_lagging(vote.sender, None, vote.height)
            raise Reject(f"height {vote.height}", reason="stale")
        if vote.phase == PHASE_PREPARE and vote.sender == self.primary(vote.view):
            raise Reject("the primary does not prepare", reason="primary_prepare")
        box = self.votes.setdefault((vote.phase, vote.view, vote.height), {})
        held = box.get(vote.sender)
        if held is not None:
            if held[0] == vote.block_hash:
                raise Reject("vote", reason="duplicate")
            self._authenticate(vote)
            raise Reject("conflicting vote", reason="equivocation")
        self._authenticate(vote)
        box[vote.sender] = (vote.block_hash, vote.signature)
        self._check_quorums(vote.view, vote.height, vote.block_hash)

    def _on_checkpoint(self, vote: Vote) -> None:
        h = vote.height
        if vote.view != 0 or h % self.cfg.checkpoint_interval != 0 or h == 0:
            raise Reject(f"height {h} view {vote.view}", reason="bad_checkpoint")
        if h <= self.ckpt.stable.height:
            self._authenticate(vote)
            self._help_lagging(vote.sender, None, h)
            raise Reject(f"checkpoint {h}", reason="stale")
        held = self.ckpt.has_vote(h, vote.sender, vote.block_hash)
        if held is not None:
            raise Reject("checkpoint", reason="duplicate" if held else "equivocation")
        self._authenticate(vote)
        keep = h <= self.committed_height + self.cfg.watermark_window
        self.ckpt.add(h, vote.sender, vote.block_hash, vote.signature, keep)
        self._check_stable(h)
        claimed = self.ckpt.claimed_height()
        if claimed > self.committed_height:
            self._request_sync(claimed)

    def _check_stable(self, height: int) -> None:
        proof = self.ckpt.quorum_at(height)
        if proof is None:
            return
        if self.committed_height < height:
            self._request_sync(height)
            return
        self.ckpt.make_stable(proof)
        self._dirty = True

    def _on_cert_notice(self, notice: CertNotice) -> None:
        cert = notice.certificate
        if cert.height == self.committed_height and cert.block_hash == self.committed_hash:
            return  # an idle peer's heartbeat: we agree, nothing to do
        if cert.height <= self.committed_height:
            self._authenticate(notice)
            self._help_lagging(notice.sender, None, cert.height + 1)
            raise Reject(f"height {cert.height}", reason="stale")
        self._authenticate(notice)
        if not self._valid_cert(cert):
            raise Reject("cert notice", reason="bad_certificate")
        self._on_certificate(cert)

    # ----------------------------------------------------------------- normal case
    def _advance(self) -> None:
        """Drive the next height: commit what is certified, else run the current slot
        (with ``pipeline_depth`` D, the slots of the next D heights, each on the block
        executed below it)."""
        while True:
            h = self.committed_height + 1
            cert = self.certs.get(h)
            if cert is None:
                for k in range(h, h + self.depth):
                    if k > h and k in self.certs:
                        return  # a later height is certified: we sync up to it
                    if not self._run_slot(k):
                        return
                return
            d = cert.block_hash
            key = (h, d)
            holders = tuple(s.index for s in cert.signatures)
            if key in self.executed:
                status = self.executed[key]
                if status is None:
                    return  # the ledger's answer is pending
                if self.exec_parent.get(key) == self.committed_hash:
                    if status is True:
                        self._commit(cert)
                        continue
                    self._request_sync(h, holders=holders)
                    return
                # Executed on a block that did not commit at h - 1: execute it again.
                del self.executed[key]
            held = self.payloads.get(d)
            if held is None:
                self._request_sync(h, holders=holders)
                return
            self._execute(cert.view, h, held[1], d, self.committed_hash)
            return

    def _execute(self, view: int, h: int, payload: bytes, d: bytes, parent: bytes) -> None:
        self.executed[(h, d)] = None
        self.exec_parent[(h, d)] = parent
        self._out.append(ExecuteBlock(view, h, payload, d, parent))

    def _run_slot(self, h: int) -> bool:
        """Run height ``h`` of this view; True once its block executed ok on the chain
        (so the height above may be executed on it)."""
        if self.vc_target is not None:
            return False
        pp = self.pre_prepares.get((self.view, h))
        if pp is None:
            self._maybe_request_proposal()
            return False
        if self.slot_since_ms is None:
            self.slot_since_ms = self.now_ms
        d = pp.block_hash
        key = (h, d)
        parent = self.chain_parent(h)
        if parent is None:
            return False
        if key in self.executed:
            if self.executed[key] is None:
                return False  # the ledger's answer is pending
            if self.exec_parent.get(key) != parent:
                del self.executed[key]  # decided on another parent: ask on this one
        if key not in self.executed:
            self._execute(self.view, h, pp.payload, d, parent)
            return False
        if self.executed[key] is not True:
            return False
        if self.primary() != self.me:
            self._send_vote(PHASE_PREPARE, self.view, h, d)
        self._check_quorums(self.view, h, d)
        return True

    def _send_vote(self, phase: int, view: int, height: int, block_hash: bytes) -> None:
        key = (phase, view, height)
        if key in self.my_votes or view < self.vote_floor:
            return
        if not self._may_sign(phase, view, height, block_hash):
            return
        vote = self._sign_vote(phase, view, height, block_hash)
        data = encode(vote)
        self.my_votes[key] = data
        self.votes.setdefault(key, {})[self.me] = (block_hash, vote.signature)
        self._broadcast(data)
        self._check_quorums(view, height, block_hash)

    def _check_quorums(self, view: int, h: int, d: bytes) -> None:
        if h != self.committed_height + 1:
            commits = self._matching(PHASE_COMMIT, view, h, d)
            if len(commits) >= self.cfg.quorum:
                self._on_certificate(
                    CommitCertificate(self.cfg.shard, view, h, d, sorted_signatures(commits))
                )
            return
        pp = self.pre_prepares.get((view, h))
        if pp is not None and pp.block_hash == d:
            prepares = self._matching(PHASE_PREPARE, view, h, d)
            prepares.pop(self.primary(view), None)
            if len(prepares) >= self.cfg.quorum - 1:
                self._record_prepared(pp, prepares)
                # COMMIT stays in height order: h - 1 is committed here and the block
                # executed ok on it (pipelining: a block may have prepared earlier).
                if self.executed_on(h, d) is True:
                    self._send_vote(PHASE_COMMIT, view, h, d)
        commits = self._matching(PHASE_COMMIT, view, h, d)
        if len(commits) >= self.cfg.quorum and h not in self.certs:
            self._on_certificate(
                CommitCertificate(self.cfg.shard, view, h, d, sorted_signatures(commits))
            )

    def _record_prepared(self, pp: PrePrepare, prepares: dict[int, bytes]) -> None:
        old = self.prepared
        if old is not None and old.height == pp.height and old.view >= pp.view:
            return
        self.prepared = PreparedCertificate(
            pp.view, pp.height, pp.block_hash, pp.payload_hash, pp.signature,
            sorted_signatures(prepares),
        )  # fmt: skip
        self.prepared_payload = pp.payload
        self._dirty = True

    def _on_certificate(self, cert: CommitCertificate) -> None:
        """``cert`` verified (or built from verified votes): commit it or sync to it."""
        h = cert.height
        signers = tuple(s.index for s in cert.signatures)
        if h <= self.committed_height or h in self.certs:
            return
        if h > self.committed_height + self.cfg.watermark_window:
            self._request_sync(h, holders=signers)
            return
        self.certs[h] = cert
        if h > self.committed_height + 1:
            self._request_sync(h - 1, holders=signers)
        self._advance()

    def _commit(self, cert: CommitCertificate) -> None:
        h, d = cert.height, cert.block_hash
        check(h == self.committed_height + 1, f"commit {h} after {self.committed_height}")
        held = self.payloads.get(d)
        if held is None:
            raise InvariantViolation(f"no payload for certified height {h}")
        payload = held[1]
        self._out.append(CommitBlock(h, cert.view, payload, d, cert))
        self.committed_height, self.committed_hash, self.last_cert = h, d, cert
        self._dirty = True
        if self.prepared is not None and self.prepared.height <= h:
            self.prepared, self.prepared_payload = None, b""
        # No restart of the request timer here: only serving the oldest pending work
        # restarts it (``_watch_pending``), so a primary committing other work while
        # it leaves one request out is still replaced (PROTOCOL.md 4.6).
        self.slot_since_ms = None
        self.consecutive_vc = 0
        self.committed_in_view = True
        self._gc(h)
        if h % self.cfg.checkpoint_interval == 0:
            vote = self._sign_vote(PHASE_CHECKPOINT, 0, h, d)
            data = encode(vote)
            self.ckpt.record_mine(h, self.me, d, vote.signature, data)
            self._broadcast(data)
            self._check_stable(h)
        if self.vc_target is not None and self.vc_reason in ("request_timeout",
                                                             "new_view_timeout"):
            # The stall we timed out on resolved (also after our new-view timer took
            # the view change further alone: issue 15); stay (passively) in our view.
            # The request timer starts again: suspect again a full timeout later.
            self.vc_target, self.vc_deadline, self.my_vc = None, None, None
            self._restart_request_timer()
            self._check_join()
        if self.sync_target <= h:
            self.sync_target, self.sync_deadline, self.sync_peers = 0, None, ()

    def _gc(self, h: int) -> None:
        for key in [k for k in self.pre_prepares if k[1] <= h]:
            del self.pre_prepares[key]
        for vkey in [k for k in self.votes if k[2] <= h]:
            del self.votes[vkey]
        for vkey in [k for k in self.my_votes if k[2] < h]:
            del self.my_votes[vkey]
        for ekey in [k for k in self.executed if k[0] <= h]:
            del self.executed[ekey]
        for ekey in [k for k in self.exec_parent if k[0] <= h]:
            del self.exec_parent[ekey]
        for d in [d for d, (height, _) in self.payloads.items() if height <= h]:
            del self.payloads[d]
        for height in [x for x in self.certs if x <= h]:
            del self.certs[height]

    def _on_executed(self, ev: BlockExecuted) -> None:
        key = (ev.height, ev.block_hash)
        if key not in self.executed or self.executed[key] is not None:
            raise Reject(f"height {ev.height}", reason="unexpected_execution")
        self.executed[key] = ev.ok
        if not ev.ok:
            self._out.append(Dropped("bad_block", ev.reason, self.primary(ev.view)))
            self.payloads.pop(ev.block_hash, None)
            cert = self.certs.get(ev.height)
            if cert is not None and cert.block_hash == ev.block_hash:
                # A certified block failed: the payload we hold is bad; fetch it again.
                del self.executed[key]
                self._request_sync(ev.height, force=True)
            elif ev.view == self.view and self.vc_target is None:
                self._start_view_change(self.view + 1, "bad_block")
            return
        self._advance()

    # ----------------------------------------------------------------- proposals
    def _maybe_request_proposal(self) -> None:
        wanted = self.wants_proposal()
        if wanted is not None and wanted != self.requested:
            self.requested = wanted
            self._out.append(RequestProposal(*wanted))

    def _on_proposal(self, ev: ProposalReady) -> None:
        if self.wants_proposal() != (ev.height, ev.view):
            raise Reject(f"height {ev.height} view {ev.view}", reason="unexpected_proposal")
        if not self._may_sign(0, ev.view, ev.height, ev.block_hash):
            raise Reject("would equivocate", reason="unexpected_proposal")
        ph = payload_digest(ev.payload)
        cfg = self.cfg
        digest = pre_prepare_digest(cfg.chain_id, cfg.shard, ev.view, ev.height, ev.block_hash, ph)
        prev = self.last_cert if self.committed_height == ev.height - 1 else None
        parent = self.chain_parent(ev.height)
        pp = PrePrepare(
            cfg.shard, ev.view, ev.height, ev.block_hash, ph, self.me,
            self._signer.sign(digest), ev.payload, prev,
        )  # fmt: skip
        self.executed[(ev.height, ev.block_hash)] = True
        self.exec_parent[(ev.height, ev.block_hash)] = parent or b""
        self._broadcast(encode(pp))
        self._accept_pre_prepare(pp)

    # ----------------------------------------------------------------- view change
    def _start_view_change(self, new_view: int, reason: str) -> None:
        if new_view <= self.view or (self.vc_target is not None and new_view <= self.vc_target):
            return
        self.vc_target, self.vc_reason = new_view, reason
        self.vote_floor = max(self.vote_floor, new_view)
        self._dirty = True
        self.consecutive_vc += 1
        self.vc_deadline = self.now_ms + self.cfg.view_change_timeout_ms * self._backoff(
            self.consecutive_vc - 1
        )
        self.slot_since_ms = None
        self._out.append(ViewChangeStarted(new_view, reason))
        vc = self._build_view_change(new_view)
        self.my_vc = encode(vc)
        self.view_changes[self.me] = vc
        self._broadcast(self.my_vc)
        self._try_new_view(new_view)

    def _on_view_change(self, vc: ViewChange) -> None:
        w = vc.new_view
        if w <= self.view:
            self._authenticate(vc)
            self._help_lagging(vc.sender, w - 1, commit_height(vc) + 1)
            raise Reject(f"view {w} <= {self.view}", reason="wrong_view")
        if w > self.view + self.cfg.views_ahead_max:
            raise Reject(f"view {w}", reason="future_view")
        held = self.view_changes.get(vc.sender)
        if held is not None and held.new_view >= w:
            self._check_join()
            raise Reject(f"view {w}", reason="duplicate" if held.new_view == w else "stale")
        self._authenticate(vc)
        cfg = self.cfg
        problem = check_view_change(vc, cfg.chain_id, cfg.shard, cfg.validators, self._verify)
        if problem is not None:
            raise Reject(problem, reason="bad_view_change")
        self.view_changes[vc.sender] = vc
        if vc.last_commit is not None and vc.last_commit.height > self.committed_height:
            self._on_certificate(vc.last_commit)
        self._help_lagging(vc.sender, None, commit_height(vc) + 1)
        self._check_join()

    def _check_join(self) -> None:
        current = self.vc_target if self.vc_target is not None else self.view
        higher = [v.new_view for v in self.view_changes.values() if v.new_view > current]
        if len(higher) >= self.cfg.f + 1:
            # Castro and Liskov 4.5.2: f+1 replicas want a later view; join the smallest.
            self._start_view_change(min(higher), "join")
        if self.vc_target is not None:
            self._try_new_view(self.vc_target)

    def _try_new_view(self, w: int) -> None:
        if self.primary(w) != self.me or self.vc_target != w:
            return
        box = [vc for vc in self.view_changes.values() if vc.new_view == w]
        if len(box) < self.cfg.quorum:
            return
        box.sort(key=lambda vc: (self._known_invalid(vc), vc.sender != self.me, vc.sender))
        chosen = box[: self.cfg.quorum]
        if any(self._known_invalid(vc) for vc in chosen):
            return  # wait for a quorum without it (the honest 2f+1 carry none)
        plan = plan_new_view(chosen, box)
        pp = None
        if plan.reproposal is not None:
            best = plan.reproposal
            payload = plan.payload
            held = self.payloads.get(best.block_hash)
            if (
                payload is None
                and held is not None
                and payload_digest(held[1]) == best.payload_hash
            ):
                payload = held[1]
            if payload is None or not self._may_sign(0, w, best.height, best.block_hash):
                return
            cfg = self.cfg
            digest = pre_prepare_digest(
                cfg.chain_id, cfg.shard, w, best.height, best.block_hash, best.payload_hash
            )
            pp = PrePrepare(
                cfg.shard, w, best.height, best.block_hash, best.payload_hash, self.me,
                self._signer.sign(digest), payload, plan.commit_cert,
            )  # fmt: skip
            plan = NewViewPlan(plan.commit_height, plan.commit_cert, best, payload)
        relayed = tuple(vc if not vc.payload else without_payload(vc) for vc in chosen)
        unsigned = NewView(self.cfg.shard, w, self.me, relayed, pp, b"")
        sig = self._signer.sign(signing_digest(self.cfg.chain_id, unsigned))
        data = encode(NewView(self.cfg.shard, w, self.me, relayed, pp, sig))
        self._broadcast(data)
        self._install_view(w, plan, pp, data)

    def _known_invalid(self, vc: ViewChange) -> bool:
        """Pipelining only: ``vc`` carries a prepared certificate for our next height
        whose block our ledger refused on our committed tip. Such a block was committed
        nowhere (the committed chain is unique and execution deterministic), yet with
        heights in flight a PREPARE quorum can form for a block on a parent that then
        lost (a byzantine replica keeps it); re-proposing it at every view change would
        stall the shard. Any 2f+1 view changes give a safe NEW-VIEW, so the primary
        simply leaves such a view change out of its quorum."""
        prepared = vc.prepared
        if self.depth == 1 or prepared is None or prepared.height != self.committed_height + 1:
            return False
        key = (prepared.height, prepared.block_hash)
        return self.executed.get(key) is False and self.exec_parent.get(key) == self.committed_hash

    def _on_new_view(self, nv: NewView, data: bytes) -> None:
        w = nv.view
        if w <= self.view:
            raise Reject(f"view {w}", reason="duplicate" if w == self.view else "wrong_view")
        if w > self.view + self.cfg.views_ahead_max:
            raise Reject(f"view {w}", reason="future_view")
        if nv.sender != self.primary(w):
            raise Reject(f"{nv.sender} is not primary of {w}", reason="not_primary")
        self._authenticate(nv)
        problem, plan = check_new_view(nv, self.cfg.chain_id, self.cfg.validators, self._verify)
        if problem is not None or plan is None:
            raise Reject(str(problem), reason="bad_new_view")
        self._install_view(w, plan, nv.pre_prepare, data)

    def _install_view(self, w: int, plan: NewViewPlan, pp: PrePrepare | None, data: bytes) -> None:
        self.view, self.vc_target, self.vc_deadline, self.my_vc = w, None, None, None
        self.new_view_msg = data
        self.committed_in_view = False
        self._restart_request_timer()
        self.slot_since_ms = None
        self.requested = None
        self._dirty = True
        for key in [k for k in self.pre_prepares if k[0] < w]:
            del self.pre_prepares[key]
        for vkey in [k for k in self.votes if k[1] < w]:
            del self.votes[vkey]
        for s in [s for s, vc in self.view_changes.items() if vc.new_view <= w]:
            del self.view_changes[s]
        self._out.append(ViewInstalled(w, self.primary(w)))
        if plan.commit_cert is not None and plan.commit_height > self.committed_height:
            self._on_certificate(plan.commit_cert)
        if pp is not None:
            if pp.height > self.committed_height:
                self._accept_pre_prepare(pp)
            elif pp.height == self.committed_height and pp.block_hash == self.committed_hash:
                self._vote_committed(pp)
        self._advance()

    # ----------------------------------------------------------------- time, sync
    def _on_tick(self, ev: Tick) -> None:
        self.now_ms = max(self.now_ms, ev.now_ms)
        self._watch_pending(ev.oldest_pending_ms)
        now = self.now_ms
        if self.vc_target is not None:
            if self.vc_deadline is not None and now >= self.vc_deadline:
                self._start_view_change(self.vc_target + 1, "new_view_timeout")
        else:
            deadline = self._progress_deadline()
            if deadline is not None and now >= deadline:
                self._start_view_change(self.view + 1, "request_timeout")
        if self.sync_deadline is not None and now >= self.sync_deadline:
            self.sync_deadline = None
            if self.sync_target > self.committed_height:
                self._request_sync(self.sync_target, force=True)
            else:
                self.sync_target = 0
        if now >= self.retransmit_at:
            self.retransmit_at = now + self.cfg.retransmit_ms
            self._retransmit()
        self._advance()

    def _retransmit(self) -> None:
        """PBFT assumes retransmission: resend our part of whatever is unfinished."""
        if self.vc_target is not None:
            if self.my_vc is None:
                vc = self._build_view_change(self.vc_target)
                self.view_changes[self.me] = vc
                self.my_vc = encode(vc)
            self._broadcast(self.my_vc)
            return
        busy = False
        if (
            self.new_view_msg is not None
            and self.primary() == self.me
            and not self.committed_in_view
        ):
            self._broadcast(self.new_view_msg)
        for h in range(self.committed_height + 1, self.committed_height + self.depth + 1):
            pp = self.pre_prepares.get((self.view, h))
            if pp is not None:
                busy = True
                if pp.sender == self.me:
                    self._broadcast(encode(pp))
            for phase in (PHASE_PREPARE, PHASE_COMMIT):
                mine = self.my_votes.get((phase, self.view, h))
                if mine is not None:
                    busy = True
                    self._broadcast(mine)
        if self.ckpt.my_vote is not None and self.ckpt.my_vote_height > self.ckpt.stable.height:
            self._broadcast(self.ckpt.my_vote)
        self.idle_rounds = 0 if busy else self.idle_rounds + 1
        if not busy and self.idle_rounds % HEARTBEAT_EVERY == 1:
            notice = self._cert_notice()
            if notice is not None:
                self._broadcast(notice)

    def _on_sync(self, ev: SyncResult) -> None:
        window = self.committed_height + self.cfg.watermark_window
        for block in sorted(ev.blocks, key=lambda b: b.height):
            h = block.height
            if h <= self.committed_height or h > window:
                continue
            held = self.certs.get(h)
            if held is not None:
                if held.block_hash != block.block_hash:
                    continue
            elif self._valid_synced(block.certificate, h, block.block_hash):
                self.certs[h] = block.certificate
            else:
                self._out.append(Dropped("bad_certificate", f"synced height {h}"))
                break
            if self.executed.get((h, block.block_hash)) is False:
                del self.executed[(h, block.block_hash)]
                self.exec_parent.pop((h, block.block_hash), None)
            if block.block_hash not in self.payloads:
                self.payloads[block.block_hash] = (h, bytes(block.payload))
        self._advance()
