"""Wires one process: flows, engine, store, state, inbox and outbox, from `Settings` — and keeps
it going while PostgreSQL or Redis come and go: webhooks are spooled while the database is away,
work a dead process left is taken over, and nothing here exits because a dependency did."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from consulta.adapters import simulator
from consulta.adapters.delivery import Pacing
from consulta.adapters.message import Channel, Inbound
from consulta.bot.broadcasts import Broadcaster
from consulta.bot.channels import close_pacing, configured_channels, open_pacing
from consulta.bot.config import Settings
from consulta.bot.inbox import Inbox
from consulta.bot.metrics import Metrics
from consulta.bot.outage import Outage
from consulta.bot.outbound import MemoryQueue, Outbox, RedisQueue, open_queue
from consulta.bot.spool import Entry, Spool, SpoolFull
from consulta.flows.check import load_library
from consulta.flows.engine import Engine
from consulta.flows.model import Flow
from consulta.storage.broadcasts import Broadcasts
from consulta.storage.data_rights import DataRights
from consulta.storage.db import connect, migrate_async
from consulta.storage.errors import is_unavailable
from consulta.storage.groups import Groups
from consulta.storage.media import MediaStore
from consulta.storage.presence import Presence, dead_here, process_id
from consulta.storage.records import ContactInfo
from consulta.storage.state import StateStore, open_state_store, redis_client
from consulta.storage.store import Store
from consulta.storage.territories import Territories

__all__ = ["Runtime", "Unavailable"]

log = logging.getLogger(__name__)

TICK = 1.0  # seconds between the supervisor's looks at Redis, the spool and the sweep clock
SPOOL_LOOK = 0.25  # …while webhooks wait in the spool
SWEEP_EVERY = 3.0  # seconds between looks for work a crashed process (or an outage) left
STALE_AFTER = timedelta(seconds=30)  # a reply queued this long, unsent, is queued again
PENDING_AFTER = timedelta(seconds=3)  # a message recorded this long, unhandled, is handled
RECORD_TIMEOUT = 5.0  # seconds a webhook waits for the database before it is spooled


_NOT_RUN = object()


def _lane(entry: Entry) -> tuple[str, ...]:
    """Whose entry: one resident's messages are replayed in order, statuses one at a time."""
    message = entry.data.get("message") or {}
    if entry.data.get("kind") == "inbound":
        return ("inbound", str(message.get("channel")), str(message.get("address")))
    return ("status",)


class Unavailable(Exception):
    """Neither the database nor the spool could take a message: the webhook answers 503."""


@dataclass
class Runtime:
    settings: Settings
    flows: dict[str, Flow]
    store: Store
    states: StateStore
    queue: MemoryQueue | RedisQueue
    engine: Engine
    outbox: Outbox
    inbox: Inbox
    spool: Spool
    presence: Presence | None = None
    channels: list[Channel] = field(default_factory=list)
    pacing: Pacing | None = None  # the channels' send caps, shared through Redis when set
    groups: Groups = field(init=False)
    broadcasts: Broadcasts = field(init=False)
    territories: Territories = field(init=False)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _passes: dict[int, bool] = field(default_factory=dict)  # contact → another pass wanted
    _handling: Outage = field(default_factory=lambda: Outage("handling messages"))
    metrics: Metrics = field(default_factory=Metrics)  # what this process measures

    def __post_init__(self) -> None:
        self.groups = Groups(self.store)
        self.broadcasts = Broadcasts(self.store.engine, self.settings.default_language)
        self.territories = Territories(self.store.engine)
        self.inbox.territories = self.territories

    @classmethod
    async def create(cls, settings: Settings, *, migrate: bool = True) -> Runtime:
        """Load and check flows (raising `FlowCheckError`), migrate, and connect."""
        flows = load_library(settings.flows_path)
        if migrate:
            await migrate_async(settings.database_url)
        holder = process_id()
        metrics = Metrics()
        store = Store(
            connect(settings.database_url),
            settings.secret_key.get_secret_value(),
            observe=metrics.observe_batch,
        )
        states = open_state_store(settings.redis_url, holder)
        presence, spool_redis = None, None
        if settings.redis_url:
            presence = Presence(redis_client(settings.redis_url, max_connections=4), holder)
            spool_redis = redis_client(settings.redis_url, max_connections=4)
        queue = open_queue(settings.redis_url, presence, metrics.observe_batch)
        engine = Engine(
            flows, default_language=settings.default_language, idle_timeout=settings.idle_timeout
        )
        outbox = Outbox(store, queue, metrics)
        outbox.register(simulator.CHANNEL, simulator.SimulatorSender())
        inbox = Inbox(
            store, states, engine, outbox, media=MediaStore(settings.media_dir), metrics=metrics
        )
        pacing = open_pacing(settings)
        channels = configured_channels(settings, pacing)
        for channel in channels:
            outbox.register(channel.name, channel)
            inbox.channels[channel.name] = channel
        spool = Spool(settings.spool_dir, spool_redis, holder)
        runtime = cls(
            settings,
            flows,
            store,
            states,
            queue,
            engine,
            outbox,
            inbox,
            spool,
            presence,
            channels,
            pacing=pacing,
            metrics=metrics,
        )
        if presence is not None and settings.redis_url:
            with contextlib.suppress(Exception):  # Redis away: the renewal keeps trying
                await presence.beat()  # alive before taking any lock, which names us
            # Renewed for as long as the process lives: its locks and claims are taken over
            # within seconds of its death, and not before.
            presence.keep_alive(settings.redis_url)
        return runtime

    # what channels call (adapters.message.Hooks) ------------------------------------------

    async def receive(self, inbound: Inbound) -> bool:
        """Record a message durably — in the database, or while it is away in the spool — and
        schedule its handling. Raises `Unavailable` when nothing could keep it."""
        try:
            outcome = await self._receive(inbound)
        except Exception:
            self.metrics.inbound.labels(inbound.channel, "refused").inc()
            raise
        self.metrics.inbound.labels(inbound.channel, outcome).inc()
        return outcome != "duplicate"

    async def _receive(self, inbound: Inbound) -> str:
        """`receive`; returns what became of the message: recorded, duplicate or spooled."""
        if inbound.provider_id is not None and self.spool.active:
            await self._spool("inbound", message=inbound.to_dict())  # behind what waits
            return "spooled"
        try:
            async with asyncio.timeout(RECORD_TIMEOUT):  # no task of its own, unlike wait_for
                received = await self.inbox.receive(inbound)
        except Exception as exc:
            if inbound.provider_id is None:  # a local channel: there is nobody to acknowledge
                raise
            log.warning("database unavailable (%s): webhook spooled", type(exc).__name__)
            await self._spool("inbound", message=inbound.to_dict())
            return "spooled"
        if received.contact_id is not None:
            self.process_soon(received.contact_id)
        return "duplicate" if received.duplicate else "recorded"

    async def delivery_status(
        self, channel: str, provider_id: str, status: str, error: str | None = None
    ) -> None:
        fields = {"channel": channel, "provider_id": provider_id, "status": status, "error": error}
        if self.spool.active:
            await self._spool("status", **fields)
            return
        try:
            await self._delivery_status(channel, provider_id, status, error)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            await self._spool("status", **fields)

    async def _delivery_status(
        self, channel: str, provider_id: str, status: str, error: str | None
    ) -> None:
        """A reply's, or a broadcast recipient's, delivery status."""
        if not await self.store.replies.update_status_by_provider_id(
            channel, provider_id, status, error
        ):
            await self.broadcasts.record_status(channel, provider_id, status, error)

    async def _spool(self, kind: str, **fields: Any) -> None:
        try:
            await self.spool.put(kind, **fields)
        except SpoolFull as exc:
            raise Unavailable(str(exc)) from exc

    async def opt_out(self, channel: str, address: str) -> None:
        contact = await self.store.find_contact(channel, address)
        if contact is not None:
            await self.store.set_opted_out(contact.id)

    async def group_seen(self, channel: str, address: str, title: str | None, active: bool) -> None:
        await self.groups.seen(channel, address, title, active)

    async def poll_vote(
        self,
        channel: str,
        poll: str,
        voter: str,
        options: list[int],
        provider_id: str,
        name: str | None = None,
    ) -> None:
        found = await self.groups.poll(channel, poll)
        if found is None:
            log.info("a vote in a poll we did not post (%s): ignored", poll)
            return
        keys = [found.keys[i] for i in options if 0 <= i < len(found.keys)]
        value = keys if found.multiple else (keys[0] if keys else None)
        await self.groups.record_vote(found, channel, voter, value, provider_id, name)

    async def forget(self, contact: ContactInfo, *, answers: bool) -> None:
        """A written data-rights request (CLI, staff API): forget the resident, their photos
        too with `answers`, and the conversation this process's state store holds."""
        await DataRights(self.store).forget(contact, answers=answers, media=self.inbox.media)
        await self.states.set(contact.id, None)

    async def health(self) -> dict[str, str]:
        """ "ok" or the error, for the database and (when configured) Redis."""
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(self.store.ping(), 5)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"error: {type(exc).__name__}"
        if self.settings.redis_url:
            try:
                await asyncio.wait_for(self.states.ping(), 5)
                checks["redis"] = "ok"
            except Exception as exc:
                checks["redis"] = f"error: {type(exc).__name__}"
        if self.spool.active:
            checks["spool"] = "replaying"  # informative: the spool is how outages are survived
        return checks

    def process_soon(self, contact_id: int) -> None:
        """Run a contact's recorded messages in the background (after the webhook answered).

        One task per contact in this process: a message arriving while its resident is being
        handled only asks that task for one more pass, instead of queueing on the lock.
        """
        if contact_id in self._passes:
            self._passes[contact_id] = True
            return
        self._passes[contact_id] = False
        task = asyncio.create_task(self._drain_contact(contact_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain_contact(self, contact_id: int) -> None:
        try:
            while True:
                self._passes[contact_id] = False
                await self._process(contact_id)
                if not self._passes[contact_id]:
                    return
        finally:
            del self._passes[contact_id]

    async def _process(self, contact_id: int) -> None:
        try:
            await self.inbox.process(contact_id)
        except Exception as exc:
            # The message stays recorded as received; the next sweep tries again.
            if is_unavailable(exc):
                self._handling.fail(exc)
            else:
                log.exception("processing contact %s failed; the sweep will retry", contact_id)
            return
        self._handling.over()

    # work left behind -----------------------------------------------------------------------

    async def sweep(self, pending_after: timedelta = PENDING_AFTER) -> None:
        """Pick up what a crashed process or an outage left: unhandled inbound, unsent
        outbound, and replies a dead process had claimed."""
        for contact_id in await self.store.contacts_with_pending_inbound(pending_after):
            self.process_soon(contact_id)  # in the background: a sweep never waits on them
        await self._requeue(await self.store.replies.stale(STALE_AFTER))
        others = await self.store.replies.senders() - {self.queue.holder}
        if self.presence is not None:
            dead = others - await self.presence.alive(others)
        else:  # one process by design: only an earlier run of this machine can have died
            dead = dead_here(others)
        await self._requeue(await self.store.replies.release_claims(sorted(dead)))

    async def recover(self) -> None:
        """Redis came back (and may have lost its queue): queue again every reply the database
        says is unsent, and handle every waiting message."""
        await self._requeue(await self.store.replies.stale(timedelta(0)))
        await self.sweep(pending_after=timedelta(0))

    async def _requeue(self, outbound: Sequence[tuple[int, int]]) -> None:
        """Queue replies again, one item per resident so theirs stay in order."""
        by_contact: dict[int, list[int]] = defaultdict(list)
        for message_id, contact_id in outbound:
            by_contact[contact_id].append(message_id)
        for ids in by_contact.values():
            await self.outbox.enqueue(ids)

    async def settle(self) -> None:
        """Wait until this process has handled what it was asked to (not for sends)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def replay_spool(self) -> int:
        """Record what waited in the spool, in arrival order for each resident (residents side
        by side), once the database answers. Returns how many entries were replayed."""
        if not await self.spool.waiting():  # also what another process spooled, or left
            return 0
        await self.store.ping()  # raises while the database is still away
        replayed = 0
        while entries := await self.spool.take():
            done, error, contacts = await self._replay_batch(entries)
            await self.spool.done(entries[:done])
            replayed += done
            for contact_id in dict.fromkeys(contacts):
                self.process_soon(contact_id)
            if error is None:
                continue
            if is_unavailable(error):
                raise error
            # A poison entry (the database answers, yet it cannot be recorded) must not hold
            # back the others: kept aside for a person to look at.
            await self.spool.set_aside(entries[done])
            log.error("spool: an entry could not be replayed (%s)", type(error).__name__)
        await self.spool.waiting()
        if replayed:
            log.info("spool: %d webhooks replayed", replayed)
        return replayed

    async def _replay_batch(
        self, entries: list[Entry]
    ) -> tuple[int, BaseException | None, list[int]]:
        """Replay `entries`, one lane per resident, each lane in order and stopping at its
        first failure. Returns how many leading entries are done (what may leave the spool;
        a later one done already is recorded once more, harmlessly, by its provider id), the
        first failure, and the residents to handle."""
        outcomes: list[Any] = [_NOT_RUN] * len(entries)
        lanes: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for i, entry in enumerate(entries):
            lanes[_lane(entry)].append(i)

        async def lane(indexes: list[int]) -> None:
            for i in indexes:
                try:
                    outcomes[i] = await self._replay(entries[i])
                except Exception as exc:
                    outcomes[i] = exc
                    return

        await asyncio.gather(*(lane(indexes) for indexes in lanes.values()))
        done = next(
            (i for i, o in enumerate(outcomes) if o is _NOT_RUN or isinstance(o, Exception)),
            len(entries),
        )
        # The first entry not done is a failure: a lane stops only after one of its own.
        error = outcomes[done] if done < len(entries) else None
        return done, error, [o for o in outcomes if isinstance(o, int)]

    async def _replay(self, entry: Entry) -> int | None:
        data = entry.data
        if data.get("kind") == "status":
            await self._delivery_status(
                data["channel"], data["provider_id"], data["status"], data.get("error")
            )
            return None
        received = await self.inbox.receive(Inbound.from_dict(data["message"]))
        return received.contact_id

    # the background of serve and worker ------------------------------------------------------

    async def run_background(self, stop: asyncio.Event, *, send: bool = True) -> None:
        """Keep this process's share of the work going until `stop` is set: presence, the
        spool, the sweeper and (with `send`) the outbox senders. Outages are waited out."""
        jobs = [self._supervise(stop)]
        notes = redis_client(self.settings.redis_url) if self.settings.redis_url else None
        if send:
            broadcaster = Broadcaster(
                self.broadcasts,
                self.store,
                self.engine,
                self.settings,
                self.outbox.senders,
                holder=self.queue.holder,
                presence=self.presence,
                redis=notes,
            )
            jobs += [self.outbox.run(stop), broadcaster.run(stop)]
        try:
            await asyncio.gather(*jobs)
        finally:
            if notes is not None:
                await notes.aclose()

    async def _supervise(self, stop: asyncio.Event) -> None:
        redis, database = Outage("Redis"), Outage("the database")
        last_sweep = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            recover = False
            if self.presence is not None:
                try:
                    # Redis lost its data, or came back after this process lost it: what the
                    # database holds must be queued again (within a tick of its return).
                    recover = await self.presence.redis_was_reset() or redis.ongoing
                    await self.queue.rescue()
                    self.metrics.queue_depth.set(await self.queue.depth())  # one LLEN a tick
                    redis.over()
                except Exception as exc:
                    redis.fail(exc)
            else:
                self.metrics.queue_depth.set(await self.queue.depth())
            try:
                await self.replay_spool()
                if recover:
                    await self.recover()
                    last_sweep = loop.time()
                elif loop.time() - last_sweep >= SWEEP_EVERY:
                    await self.sweep()
                    last_sweep = loop.time()
                database.over()
            except Exception as exc:
                if is_unavailable(exc):
                    database.fail(exc)
                else:
                    log.exception("sweep failed")
            # Closer looks while webhooks wait in the spool: they are replayed soon after the
            # database answers again.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SPOOL_LOOK if self.spool.active else TICK)

    async def drain(self) -> None:
        """Wait for background processing and queued sends (tests, the terminal)."""
        await self.settle()
        await self.queue.join()

    async def start_channels(self) -> None:
        for channel in self.channels:
            await channel.start(self)

    async def close(self) -> None:
        for channel in self.channels:
            with contextlib.suppress(Exception):
                await channel.close()
        await close_pacing(self.pacing)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.presence is not None:
            with contextlib.suppress(Exception):
                await self.presence.leave()  # others take over at once, not in seconds
            await self.presence.redis.aclose()
        if self.spool.redis is not None:
            await self.spool.redis.aclose()
        await self.states.close()
        await self.queue.close()
        await self.store.close()
