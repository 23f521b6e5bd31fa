"""A broadcast survives a sending process's death: two real `consulta worker` processes send
one to a Twilio double; one is SIGKILLed mid-way and started again. Nobody is lost and nobody
receives it twice, and the cap held in total (PostgreSQL and Redis of the test's own)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.broadcasts import Case, run_case
from tests.faults.harness import PostgresCluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[PostgresCluster, Path]]:
    root = Path(tempfile.mkdtemp(prefix="consulta-broadcast-test-"))
    os.chmod(root, 0o755)  # PostgreSQL runs as `postgres` and lives under it
    cluster = PostgresCluster(root).init()
    cluster.start()
    try:
        yield cluster, root
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)


async def test_a_worker_killed_mid_broadcast_loses_nobody_and_repeats_nobody(
    cluster: tuple[PostgresCluster, Path],
) -> None:
    pg, root = cluster
    case = Case("kill", rate=100, recipients=500, kill=True, kill_after=1.5)
    outcome = await run_case(case, pg, root)
    report = "\n".join(outcome.lines)
    assert outcome.duplicates == 0, report
    assert outcome.lost == 0, report
    assert outcome.received == 500, report
    assert outcome.busiest <= 100, report  # the two workers' cap held in total
    assert "SIGKILLed" in report
