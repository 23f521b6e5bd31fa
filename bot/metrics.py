"""What every process measures of its work, in Prometheus' text format (`GET /metrics` on `serve`,
and on the worker's own port): messages in and out, turns, retries, the queue, latency, batches,
and the standard process and garbage-collector figures.

One `Metrics` per process (the runtime's); names follow Prometheus conventions: a `consulta_`
prefix, base units (seconds), `_total` on counters. Labels never carry an address or a chat id.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
# From a fast reply (tens of ms) to one that waited out an outage (a minute).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

# No `…_created` series beside every counter and histogram: twice the series, and what they
# say (when this process started counting) is `process_start_time_seconds`.
disable_created_metrics()


class Metrics:
    """The instruments of one process, on a registry of its own."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)
        PlatformCollector(registry=registry)
        self.inbound = Counter(
            "consulta_inbound_messages_total",
            "Messages from residents, by channel and what became of them "
            "(recorded, duplicate, spooled, refused)",
            ["channel", "outcome"],
            registry=registry,
        )
        self.rejected = Counter(
            "consulta_rejected_requests_total",
            "HTTP requests refused with a 4xx, by route",
            ["route"],
            registry=registry,
        )
        self.turns = Counter(
            "consulta_turns_total",
            "Messages run through the engine, by outcome (handled, failed)",
            ["outcome"],
            registry=registry,
        )
        self.outbound = Counter(
            "consulta_outbound_messages_total",
            "Replies and posts, by channel and result (sent, failed)",
            ["channel", "result"],
            registry=registry,
        )
        self.retries = Counter(
            "consulta_outbound_retries_total",
            "Sends tried again after a transient failure, by channel",
            ["channel"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "consulta_outbound_queue_depth",
            "Items waiting in the outbound queue, each one turn's replies (as last looked at)",
            registry=registry,
        )
        self.reply_latency = Histogram(
            "consulta_reply_latency_seconds",
            "From a resident's message being recorded to its first reply being accepted by the "
            "provider",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "consulta_batch_size",
            "How many items each group-committed batch held, by batcher",
            ["batcher"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )

        self._batches: dict[str, Histogram] = {}  # the batch-size histogram of each batcher

    def observe_batch(self, batcher: str, size: int) -> None:
        """A batcher's observer (`storage.batch.BatchObserver`): one batch of `size` items."""
        child = self._batches.get(batcher)
        if child is None:
            child = self._batches[batcher] = self.batch_size.labels(batcher)
        child.observe(size)

    def exposition(self) -> bytes:
        """The text format, for a `/metrics` response with `CONTENT_TYPE`."""
        return generate_latest(self.registry)
