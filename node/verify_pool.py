"""Ed25519 verification on the cores the node is given (issue 16, deliverable 3).

Both signature paths release the GIL while they verify (``crypto.VERIFY_BACKEND``: the
compiled extension ``shardnet_ed25519`` once per chunk, for the whole chunk, through
``verify_signatures``; OpenSSL in ``cryptography`` once per signature), so threads
verify in parallel: a batch of signatures is cut into contiguous chunks, one per
thread, and the verdicts come back in the order of the checks. Each verdict is
``verify_signature``'s (docs/PROTOCOL.md section 1, "Signature validity"): the pool
changes where a signature is checked, never whether it passes. Below
``VERIFY_PARALLEL_MIN`` signatures a batch is checked on the calling thread (handing
work to a thread costs more than a few verifications).

``[executor] verify_threads`` sets the threads (0: the cores the process may use,
CPU affinity capped by the cgroup quota, as the executor's workers).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from consensus.kernel.crypto import SignatureCheck, VerifyMany, verify_signatures
from node.executor_pool import available_cores

VERIFY_PARALLEL_MIN = 32  # signatures: fewer are verified on the caller's thread


def resolve_verify_threads(configured: int) -> int:
    """``[executor] verify_threads``: 0 means every available core."""
    return configured if configured > 0 else available_cores()


def chunk_bounds(count: int, chunks: int) -> list[tuple[int, int]]:
    """``chunks`` contiguous, nearly equal (start, stop) ranges covering ``range(count)``."""
    chunks = max(1, min(chunks, count))
    size, extra = divmod(count, chunks)
    bounds = []
    start = 0
    for k in range(chunks):
        stop = start + size + (1 if k < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


class VerifyPool:
    """``verify_many`` over ``threads`` threads (one thread: no pool, the caller's)."""

    def __init__(self, threads: int, verify: VerifyMany | None = None) -> None:
        """``verify``: what checks a chunk; None: ``verify_signatures`` (the path
        ``VERIFY_BACKEND`` names; the bench passes the pure path to compare)."""
        if threads < 1:
            raise ValueError(f"verify_threads must be at least 1, not {threads}")
        self.threads = threads
        self._verify = verify
        self._pool = (ThreadPoolExecutor(threads, thread_name_prefix="verify")
                      if threads > 1 else None)

    def verify_many(self, checks: Sequence[SignatureCheck]) -> list[bool]:
        """One verdict per check, in order, each ``verify_signature``'s."""
        pool = self._pool
        verify = self._verify or verify_signatures
        if pool is None or len(checks) < VERIFY_PARALLEL_MIN:
            return verify(checks)
        chunks = min(self.threads, len(checks) // (VERIFY_PARALLEL_MIN // 2))
        try:
            futures = [pool.submit(verify, checks[start:stop])
                       for start, stop in chunk_bounds(len(checks), chunks)]
        except RuntimeError:  # closed while the node stops: verify here
            return verify(checks)
        verdicts: list[bool] = []
        for future in futures:
            verdicts.extend(future.result())
        return verdicts

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=False)
