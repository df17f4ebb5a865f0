"""VIEW-CHANGE validation and the NEW-VIEW decision (Castro and Liskov 4.4).

A replica sends COMMIT for height h only once it has committed h-1 itself (with
``pipeline_depth`` 1 it even executes h only then; with depth D it may pre-prepare,
execute and prepare up to D heights ahead, but COMMITs stay in height order). So its
VIEW-CHANGE can report "committed up to c (certificate), prepared at c+1
(certificate)", and prepared certificates above c+1 need not travel. The new primary
takes C = the highest committed height in the 2f+1 view changes and re-proposes, at
C+1, the block of the highest-view prepared certificate there; with none, it proposes
a fresh block. This is the paper's min-s / max-s rule with max-s <= min-s + 1, so no
null requests are ever needed.

Why it is safe: a block committed at (v, h) had 2f+1 COMMITs, f+1 of them from honest
replicas that had committed h-1 and prepared h before sending them (and persisted
both). Any 2f+1 view changes include one of those, so C >= h-1 (nothing committed
anywhere is above C+1, which is why re-proposing at C+1 alone suffices even with
heights in flight), and that replica reports either a commit certificate at >= h (so
C >= h and h is never re-decided) or its prepared certificate at h with view >= v;
every prepared certificate at h in views >= v names the same block (induction over
views, as in the paper). A block prepared above C+1 was committed nowhere and is
simply proposed again or replaced. ``test_simulator_catches_commits_out_of_height_order``
shows what breaks without the ordering rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from consensus.certificate import (
    CommitCertificate,
    PreparedCertificate,
    Verifier,
    primary_of,
    quorum_size,
    verify_certificate,
    verify_checkpoint,
    verify_prepared,
)
from consensus.messages import NewView, ViewChange, payload_digest, signing_digest


def commit_height(vc: ViewChange) -> int:
    return vc.last_commit.height if vc.last_commit is not None else 0


def check_view_change(
    vc: ViewChange,
    chain_id: str,
    shard: int,
    validators: Sequence[bytes],
    verify: Verifier,
) -> str | None:
    """None when ``vc`` is well formed and every proof in it verifies; else a reason.
    The envelope signature is checked by the caller (or by ``check_new_view``)."""
    if not verify_checkpoint(vc.checkpoint, chain_id, shard, validators, verify):
        return "bad_checkpoint_proof"
    committed = commit_height(vc)
    # Verify the last commit certificate covers at least the stable checkpoint.
    if committed < vc.checkpoint.height:
        return "commit_below_checkpoint"
    cert = vc.last_commit
    if cert is not None and not verify_certificate(
        cert, chain_id, shard, cert.height, cert.block_hash, validators, verify
    ):
        return "bad_commit_certificate"
    prepared = vc.prepared
    if prepared is not None:
        # Verify the prepared certificate is for the next height, from an earlier view.
        if prepared.height != committed + 1 or prepared.view >= vc.new_view:
            return "prepared_out_of_place"
        if not verify_prepared(prepared, chain_id, shard, validators, verify):
            return "bad_prepared_certificate"
    return None


@dataclass(frozen=True, slots=True)
class NewViewPlan:
    commit_height: int
    commit_cert: CommitCertificate | None
    reproposal: PreparedCertificate | None
    payload: bytes | None


def plan_new_view(
    chosen: Sequence[ViewChange], payload_sources: Sequence[ViewChange] = ()
) -> NewViewPlan:
    """The deterministic NEW-VIEW content every backup recomputes from the same set.

    ``payload_sources`` are extra view changes (with payloads) the primary holds; the
    re-proposed payload is taken from any of them whose bytes match the prepared
    certificate's signed payload hash.
    """
    best_commit = max(chosen, key=commit_height)
    top = commit_height(best_commit)
    candidates = [
        vc.prepared for vc in chosen if vc.prepared is not None and vc.prepared.height == top + 1
    ]
    if not candidates:
        return NewViewPlan(top, best_commit.last_commit, None, None)
    best = max(candidates, key=lambda p: (p.view, p.block_hash, p.payload_hash))
    payload = None
    for vc in (*chosen, *payload_sources):
        if vc.payload and payload_digest(vc.payload) == best.payload_hash:
            payload = vc.payload
            break
    return NewViewPlan(top, best_commit.last_commit, best, payload)


def check_new_view(
    nv: NewView,
    chain_id: str,
    validators: Sequence[bytes],
    verify: Verifier,
) -> tuple[str | None, NewViewPlan | None]:
    """Validate a NEW-VIEW (signature checked by the caller) and return its plan."""
    n = len(validators)
    shard = nv.shard
    if nv.sender != primary_of(nv.view, n):
        return "not_primary", None
    vcs = nv.view_changes
    senders = [vc.sender for vc in vcs]
    # Verify 2f+1 view changes for this view from distinct validators.
    if len(vcs) < quorum_size(n) or len(set(senders)) != len(senders):
        return "too_few_view_changes", None
    for vc in vcs:
        if vc.new_view != nv.view or vc.shard != shard or vc.sender >= n:
            return "view_change_mismatch", None
        if not verify(validators[vc.sender], signing_digest(chain_id, vc), vc.signature):
            return "bad_view_change_signature", None
        reason = check_view_change(vc, chain_id, shard, validators, verify)
        if reason is not None:
            return reason, None
    plan = plan_new_view(vcs)
    pp = nv.pre_prepare
    if plan.reproposal is None:
        # Verify no re-proposal when nothing was prepared above the top commit.
        return (None, plan) if pp is None else ("unexpected_pre_prepare", None)
    best = plan.reproposal
    if pp is None:
        return "missing_pre_prepare", None
    # Verify the re-proposal is exactly the highest prepared block, signed by the primary.
    if (
        pp.view != nv.view
        or pp.height != best.height
        or pp.block_hash != best.block_hash
        or pp.payload_hash != best.payload_hash
        or pp.sender != nv.sender
        or pp.shard != shard
    ):
        return "wrong_reproposal", None
    if payload_digest(pp.payload) != pp.payload_hash:
        return "bad_payload", None
    if not verify(validators[pp.sender], signing_digest(chain_id, pp), pp.signature):
        return "bad_pre_prepare_signature", None
    plan = NewViewPlan(plan.commit_height, plan.commit_cert, best, pp.payload)
    return None, plan
