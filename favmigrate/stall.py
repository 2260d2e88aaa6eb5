"""How long does a migration stall the application's writes? A steady writer and a lock sampler measure it.

While a migration runs, `writes_during` keeps a writer thread committing one small transaction at a
time at a steady rate on its own autocommit connection, recording each one's latency, and a sampler
thread polling ``pg_blocking_pids`` of the writer to name what it waited for. The worst latency is the
longest stall an application write saw. Used by ``favmigrate demo`` and ``bench/apply_bench.py``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

WRITER_APP = "favmigrate-demo-writer"
SAMPLE_S = 0.01  # how often the sampler asks pg_blocking_pids whether the writer waits on a lock
LEAD_S = 1.0  # the writer runs alone this long before the migration starts, and as long after it ends
WRITER_STATEMENT_TIMEOUT = "120s"  # a writer stuck longer than this is recorded as an error, not waited for

# One write transaction: run transaction number ``n`` on the connection (autocommit, so the function opens
# its own transaction block) and return what kind of write it was ("insert", "update").
WriteTransaction = Callable[[psycopg.Connection[Any], int], str]


@dataclass(frozen=True)
class Txn:
    """One write transaction: when it started (seconds on the recording's clock), how long it took."""

    started: float
    latency: float
    kind: str
    error: str = ""


@dataclass(frozen=True)
class Blocker:
    """What the writer waited for, seen by the sampler: the blocking backend's application and query."""

    application: str
    query: str
    waiting_for: str
    samples: int
    first_s: float
    last_s: float


def percentile(ordered: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0.0 when empty). Pure."""
    if not ordered:
        return 0.0
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def intended_percentile(ordered: Sequence[float], rate: float, pct: float) -> float:
    """The percentile as requests arriving at ``rate`` per second would see it. Pure.

    While one transaction is stalled, those due meanwhile would have waited too: each is added with the
    wait it would have had (the coordinated-omission correction of HdrHistogram).
    """
    interval = 1.0 / rate
    values: list[float] = []
    for latency in ordered:
        values.append(latency)
        missing = latency - interval
        while missing >= interval:
            values.append(missing)
            missing -= interval
    return percentile(sorted(values), pct)


@dataclass
class Recording:
    """What `writes_during` saw: every write transaction and lock wait, and when the measured work ran
    (``started`` .. ``ended``, seconds on the same clock as each `Txn`)."""

    rate: float
    started: float = 0.0
    ended: float = 0.0
    txns: list[Txn] = field(default_factory=list)
    blockers: list[Blocker] = field(default_factory=list)

    @property
    def latencies(self) -> list[float]:
        """Latencies of the transactions that committed, ascending."""
        return sorted(t.latency for t in self.txns if not t.error)

    @property
    def worst(self) -> float:
        """The longest write transaction, failed ones included (0.0 when there was none)."""
        return max((t.latency for t in self.txns), default=0.0)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 99)

    @property
    def p99_intended(self) -> float:
        return intended_percentile(self.latencies, self.rate, 99)

    @property
    def lock_wait(self) -> float:
        """About how long the sampler saw the writer waiting on a lock (samples x the sampling interval)."""
        return sum(b.samples for b in self.blockers) * SAMPLE_S

    @property
    def errors(self) -> int:
        return sum(1 for t in self.txns if t.error)

    @property
    def achieved_rate(self) -> float:
        span = self.txns[-1].started - self.txns[0].started if len(self.txns) > 1 else 0
        return (len(self.txns) - 1) / span if span else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"rate_txn_s": self.rate, "transactions": len(self.txns), "errors": self.errors,
                "worst_ms": round(self.worst * 1000, 1), "p99_ms": round(self.p99 * 1000, 1),
                "p99_intended_ms": round(self.p99_intended * 1000, 1),
                "lock_wait_ms": round(self.lock_wait * 1000), "measured_s": round(self.ended - self.started, 3),
                "first_error": next((t.error for t in self.txns if t.error), None)}


class _Worker:
    """A daemon thread working on its own autocommit connection, from `start` until `halt`."""

    def __init__(self, dsn: str, application: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True, application_name=application)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=application, daemon=True)
        self._origin = 0.0

    def start(self, origin: float) -> None:
        """Start working; times are recorded in seconds since ``origin`` (a ``time.perf_counter()`` value)."""
        self._origin = origin
        self._thread.start()

    def halt(self, timeout: float) -> None:
        """Stop after the work in hand (waiting at most ``timeout`` seconds) and close the connection."""
        self._stop.set()
        self._thread.join(timeout=timeout)
        self.conn.close()

    def _loop(self) -> None:
        raise NotImplementedError


class Writer(_Worker):
    """Write transactions at a steady rate on one autocommit connection; records each one's latency.

    One connection, so a blocked transaction delays the next one instead of piling up more: the worst
    latency is the longest stall an application write saw.
    """

    def __init__(self, dsn: str, write: WriteTransaction, *, rate: float, application: str = WRITER_APP) -> None:
        super().__init__(dsn, application)
        self.conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(WRITER_STATEMENT_TIMEOUT)))
        self.pid = self.conn.info.backend_pid
        self.interval = 1.0 / rate
        self.write = write
        self.txns: list[Txn] = []

    def stop(self) -> list[Txn]:
        self.halt(timeout=150)
        return self.txns

    def _loop(self) -> None:
        due = time.perf_counter()
        n = 0
        while not self._stop.is_set():
            pause = due - time.perf_counter()
            if pause > 0:
                self._stop.wait(pause)
                if self._stop.is_set():
                    break
            started = time.perf_counter()
            kind, error = "write", ""
            try:
                kind = self.write(self.conn, n)
            except psycopg.Error as exc:
                error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.txns.append(Txn(started - self._origin, time.perf_counter() - started, kind, error))
            n += 1
            # a stalled transaction is not followed by a burst of catch-up transactions
            due = max(due + self.interval, time.perf_counter())


_BLOCKERS = sql.SQL("""
SELECT DISTINCT b.application_name,
       left(btrim(regexp_replace(regexp_replace(b.query, '--[^\\n]*', '', 'g'), '\\s+', ' ', 'g')), 140) AS query,
       (SELECT string_agg(l.mode, ',') FROM pg_locks l WHERE l.pid = %(pid)s AND NOT l.granted) AS waiting_for
FROM unnest(pg_blocking_pids(%(pid)s)) AS bp(pid)
JOIN pg_stat_activity b ON b.pid = bp.pid
""")


class LockSampler(_Worker):
    """Polls pg_blocking_pids of the writer from its own connection; tallies who blocked it."""

    def __init__(self, dsn: str, writer_pid: int, *, application: str, interval: float = SAMPLE_S) -> None:
        super().__init__(dsn, application)
        self.writer_pid = writer_pid
        self.interval = interval
        self.seen: dict[tuple[str, str, str], list[float]] = {}

    def stop(self) -> list[Blocker]:
        self.halt(timeout=10)
        return [Blocker(app, query, mode, len(times), round(min(times), 3), round(max(times), 3))
                for (app, query, mode), times in sorted(self.seen.items(), key=lambda kv: -len(kv[1]))]

    def _loop(self) -> None:
        with contextlib.suppress(psycopg.Error):
            while not self._stop.wait(self.interval):
                now = time.perf_counter() - self._origin
                for app, query, mode in self.conn.execute(_BLOCKERS, {"pid": self.writer_pid}).fetchall():
                    self.seen.setdefault((app or "-", query or "", mode or ""), []).append(now)


@contextlib.contextmanager
def writes_during(dsn: str, write: WriteTransaction, *, rate: float, lead_s: float = LEAD_S,
                  origin: float | None = None, application: str = WRITER_APP,
                  sample_locks: bool = True) -> Iterator[Recording]:
    """Run the writer and (``sample_locks``) the lock sampler on ``dsn`` around the block; the yielded
    `Recording` is complete once the block is left. Writes (through ``write``).

    The writer runs alone ``lead_s`` seconds before the block and after it, so a stall at either edge is
    seen whole. ``application`` names the writer's connection (the sampler's adds "-sampler"); ``origin``
    (a ``time.perf_counter()`` value, default now) is the zero of the recording's clock. Without
    ``sample_locks`` the recording names no blockers, and nothing asks the server 100 times a second (a
    measurable load on a small machine). Raises psycopg.Error when the writer or the sampler cannot connect.
    """
    recording = Recording(rate=rate)
    writer = Writer(dsn, write, rate=rate, application=application)
    try:
        sampler = LockSampler(dsn, writer.pid, application=application + "-sampler") if sample_locks else None
    except BaseException:
        writer.conn.close()
        raise
    zero = time.perf_counter() if origin is None else origin
    writer.start(zero)
    if sampler:
        sampler.start(zero)
    try:
        time.sleep(lead_s)
        recording.started = time.perf_counter() - zero
        yield recording
        recording.ended = time.perf_counter() - zero
        time.sleep(lead_s)
    finally:
        recording.txns = writer.stop()
        recording.blockers = sampler.stop() if sampler else []
