"""The usage recorder against a database that is not there: records wait in memory up to
max_pending (the oldest dropped beyond, counted), it says it cannot record, and the report
of a real SQLite database sums and ranks latencies per group."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway_server.access.database import Database
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


async def test_report_groups_and_percentiles(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'u.db'}")
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
        assert rows["a"].cost == pytest.approx(50e-6)
        total = (await recorder.report()).data
        assert [(t.group, t.requests) for t in total] == [(None, 100)]
        assert (await recorder.report(key="nobody")).data == []
    finally:
        await recorder.aclose()
        await db.aclose()
