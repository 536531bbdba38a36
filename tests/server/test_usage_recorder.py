"""The usage recorder against a database that is not there: records wait in memory up to
max_pending (the oldest dropped beyond, counted), it says it cannot record, and the report
of a real SQLite database sums and ranks latencies per group; a flush waits for the batch
being written, and a stop lets it finish."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway_server.access.database import Database
from gateway_server.access.schema import usage
from gateway_server.access.usage import UsageRecord, UsageRecorder
from tests.postgres_fixture import postgres_server


def _record(i: int, *, alias: str = "m", key: str = "k1", status: int = 200,
            latency_ms: float = 1.0) -> UsageRecord:
    return UsageRecord(ts=time.time(), request_id=f"r{i}", key_id=key, team_id=None,
                       alias=alias, provider="p", model="u", api="chat", input_tokens=i,
                       output_tokens=1, cost_nano=1000, latency_ms=latency_ms, status=status)


async def test_records_are_bounded_while_the_database_is_down() -> None:
    with postgres_server() as pg:
        db = Database(pg.url)
        await db.start()
        pg.halt()  # every write fails from here on
        await _bounded(db)


async def _bounded(db: Database) -> None:
    dropped: list[int] = []
    errors: list[int] = []
    recorder = UsageRecorder(db, batch_size=2, max_pending=5, on_drop=dropped.append,
                             on_error=lambda: errors.append(1))
    try:
        assert recorder.can_record()
        for i in range(8):
            recorder.record(_record(i))
        assert recorder.pending == 5 and sum(dropped) == 3
        assert await recorder.flush() is False
        assert not recorder.can_record() and recorder.last_error is not None
        assert recorder.pending == 5 and errors == [1]
        health = recorder.health()
        assert health["healthy"] is False and health["dropped"] == 3
    finally:
        await recorder.aclose(timeout_s=2.0)
        await db.aclose()



async def test_a_flush_waits_for_the_batch_being_written(tmp_path: Path) -> None:
    """The admin API flushes before it reads spend. With the recorder's own flush in the
    middle of a batch (taken out of the queue, not yet committed), that flush used to find
    the queue empty and return at once, and the read missed the batch (seen in CI: a key's
    spend said 3 requests of 4)."""
    db = Database(f"sqlite:///{tmp_path / 'u.db'}")
    await db.start()
    recorder = UsageRecorder(db, flush_interval_s=3600)
    try:
        for i in range(20):
            recorder.record(_record(i))
        writing = asyncio.create_task(recorder.flush())
        await asyncio.sleep(0)  # it takes the batch and waits for the database
        assert recorder.pending == 0 and not writing.done()
        assert await recorder.flush() is True
        assert writing.done()  # returned only once the batch it found in flight was written
        assert (await recorder.report()).data[0].requests == 20
        assert await writing is True
    finally:
        await recorder.aclose(timeout_s=2.0)
        await db.aclose()


async def test_a_stop_does_not_cut_a_batch_being_written(tmp_path: Path) -> None:
    """A graceful stop while the recorder's task is writing a batch: that batch reaches
    the database (the task used to be cancelled in the middle of it, losing it)."""
    db = Database(f"sqlite:///{tmp_path / 'u.db'}")
    await db.start()
    recorder = UsageRecorder(db, flush_interval_s=0.01)
    await recorder.start()
    for i in range(50):
        recorder.record(_record(i))
    while recorder.pending:  # noqa: ASYNC110 - until the task takes the batch out of the queue
        await asyncio.sleep(0)
    await recorder.aclose(timeout_s=10.0)
    try:
        with sa.create_engine(f"sqlite:///{tmp_path / 'u.db'}").connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(usage)).scalar()
        assert count == 50
    finally:
        await db.aclose()

@contextlib.contextmanager
def _database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'u.db'}"
    else:
        with postgres_server() as pg:
            yield pg.url


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_report_groups_and_percentiles(backend: str, tmp_path: Path) -> None:
    with _database_url(backend, tmp_path) as url:
        await _report(Database(url))


async def _report(db: Database) -> None:
    await db.start()
    recorder = UsageRecorder(db)
    try:
        for i in range(1, 101):
            recorder.record(_record(i, alias="a" if i % 2 else "b", latency_ms=float(i),
                                    status=500 if i == 100 else 200))
        assert await recorder.flush() is True
        report = await recorder.report(group_by="model")
        rows = {r.group: r for r in report.data}
        assert (rows["a"].requests, rows["b"].requests) == (50, 50)
        assert (rows["a"].errors, rows["b"].errors) == (0, 1)
        assert rows["a"].input_tokens == sum(range(1, 101, 2))
        assert rows["b"].p50_latency_ms == 50.0 and rows["b"].p99_latency_ms == 100.0
        # Nearest rank, ceil(q * n): of a's 50 latencies 1, 3, ..., 99 the 25th and 50th.
        assert rows["a"].p50_latency_ms == 49.0 and rows["a"].p99_latency_ms == 99.0
        by_day = (await recorder.report(group_by="day")).data
        assert [(d.requests, d.p50_latency_ms, d.p99_latency_ms) for d in by_day] \
            == [(100, 50.0, 99.0)]
        assert rows["a"].cost == pytest.approx(50e-6)
        total = (await recorder.report()).data
        assert [(t.group, t.requests, t.p50_latency_ms, t.p99_latency_ms) for t in total] \
            == [(None, 100, 50.0, 99.0)]
        one = (await recorder.report(model="b", since=0.0)).data
        assert [(t.requests, t.p50_latency_ms) for t in one] == [(50, 50.0)]
        assert (await recorder.report(key="nobody")).data == []
    finally:
        await recorder.aclose()
        await db.aclose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_every_record_is_written_as_it_was_made(backend: str, tmp_path: Path) -> None:
    """123 records in batches of 100, each batch several multi-row INSERTs: every column of
    every record reads back as it was recorded, none twice, none missing."""
    with _database_url(backend, tmp_path) as url:
        db = Database(url)
        await db.start()
        recorder = UsageRecorder(db, batch_size=100)
        made = [UsageRecord(ts=1_700_000_000.0 + i, request_id=f"r{i}", key_id=f"k{i % 3}",
                            team_id=None if i % 2 else "t", alias=f"a{i % 5}",
                            provider=None if i % 7 == 0 else "p", model="u", api="chat",
                            input_tokens=i, output_tokens=2 * i, cached_tokens=i % 4,
                            reasoning_tokens=i % 9, cost_nano=1000 * i,
                            latency_ms=i / 8, status=200 + i % 300)
                for i in range(123)]
        try:
            for rec in made:
                recorder.record(rec)
            assert await recorder.flush() is True
            assert recorder.written == 123 and recorder.pending == 0
            async with db.engine.connect() as conn:
                rows = (await conn.execute(sa.select(
                    *(usage.c[name] for name in UsageRecord.__struct_fields__),
                    usage.c.day).order_by(usage.c.ts))).all()
        finally:
            await recorder.aclose()
            await db.aclose()
    assert [tuple(r) for r in rows] == [rec.row() for rec in made]
