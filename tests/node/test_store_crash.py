"""SIGKILL a real writer process at random moments, then check what it left on disk.

The writer (``tests/support/store_crash_writer.py``) builds real ledger blocks (signed
transfers, some of them cross-shard) and commits each one through ``Store``,
printing ``begin H`` before and ``done H`` after every commit. Each round the
test waits for a chosen ``begin``, kills the writer there or a little later
(seeded), and reopens the file:

- the stored chain ends at a height between the last ``done`` and the last
  ``begin`` seen (nothing acknowledged is lost, nothing half-written appears);
- every block below it is there, hash-linked, with its certificate, tx index and
  receipts;
- the state rebuilt from the stored items has the root of the last stored header.

The next round's writer resumes from the same file, so recovery itself is under
test too. A failure prints the seed.
"""

from __future__ import annotations

import asyncio
import os
import random
import selectors
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.store_crash_writer import verify_store

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("SHARDNET_CRASH_SEED", "20261122"))
ROUNDS = 16
LINE_TIMEOUT_S = 60.0


@dataclass
class WriterLog:
    ready_height: int | None = None
    last_begin: int | None = None
    last_done: int | None = None
    lines: list[str] = field(default_factory=list)
    commit_us: list[int] = field(default_factory=list)


class Writer:
    """The writer subprocess and its line protocol on stdout."""

    def __init__(self, db: Path, seed: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.store_crash_writer", str(db), str(seed)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.log = WriterLog()
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)

    def wait_for(self, word: str, height: int | None = None) -> int:
        """Read lines until ``word`` (at ``height`` if given); return its height."""
        deadline = time.monotonic() + LINE_TIMEOUT_S
        assert self.proc.stdout is not None
        while True:
            while b"\n" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\n", 1)
                got_word, got_height = self._record(raw.decode())
                if got_word == word and (height is None or got_height >= height):
                    return got_height
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timeout waiting for {word} {height}: {self.log.lines[-5:]}")
            if self._selector.select(remaining):
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise AssertionError(f"writer exited early: {self.log.lines[-5:]}\n{err}")
                self._buffer += chunk

    def _record(self, line: str) -> tuple[str, int]:
        self.log.lines.append(line)
        word, height_text, *rest = line.split()
        height = int(height_text)
        if rest:
            self.log.commit_us.append(int(rest[0]))
        if word == "ready":
            self.log.ready_height = height
        elif word == "begin":
            self.log.last_begin = height
        elif word == "done":
            self.log.last_done = height
        return word, height

    def kill(self) -> None:
        """SIGKILL by pid, then drain what the writer printed before it died."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        assert self.proc.stdout is not None
        try:
            rest = self.proc.stdout.read() or b""
        except BlockingIOError:
            rest = b""
        self._buffer += rest
        for raw in self._buffer.split(b"\n"):
            if raw.strip():
                self._record(raw.decode())
        self._buffer = b""
        self._selector.close()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def test_sigkill_at_random_moments_leaves_a_consistent_store(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    db = tmp_path / "node.db"
    mid_commit_kills = 0
    highest = 0
    for round_ in range(ROUNDS):
        writer = Writer(db, SEED + round_)
        try:
            ready = writer.wait_for("ready")
            target = ready + rng.randint(2, 4)
            writer.wait_for("begin", target)
            if rng.random() < 0.75:
                # Inside this commit: a uniform moment of a typical commit's duration.
                time.sleep(rng.uniform(0.0, statistics.median(writer.log.commit_us) / 1e6))
            else:
                # Anywhere: in or after this commit, or in the next block's execution.
                time.sleep(rng.uniform(0.0, 0.03))
            writer.kill()
        finally:
            if writer.proc.poll() is None:
                os.kill(writer.proc.pid, signal.SIGKILL)
                writer.proc.wait(timeout=30)
        log = writer.log
        assert log.last_begin is not None
        context = f"seed={SEED} round={round_} log tail={log.lines[-4:]}"
        try:
            stored = asyncio.run(verify_store(db))
        except Exception as exc:
            raise AssertionError(f"{context}: {exc!r}") from exc
        # Verify nothing acknowledged was lost and nothing unbegun appeared.
        assert stored >= (log.last_done if log.last_done is not None else ready), context
        assert stored <= log.last_begin, context
        assert stored >= highest, context
        if log.last_done is None or log.last_done < log.last_begin:
            mid_commit_kills += 1
        highest = stored
    assert highest >= ROUNDS  # every round moved the chain on
    print(f"crash test: {ROUNDS} rounds, {mid_commit_kills} kills between begin and done")


def test_a_fresh_store_opens_at_genesis(tmp_path: Path) -> None:
    db = str(tmp_path / "x.db")
    out = subprocess.run(
        [sys.executable, "-m", "tests.support.store_crash_writer", db, "1", "--check-only"],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.split() == [b"ready", b"0"]
