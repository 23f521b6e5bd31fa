"""Wires one process: flows, engine, store, state, inbox and outbox, from `Settings`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from adapters import simulator
from adapters.message import Channel, Inbound
from bot.channels import configured_channels
from bot.config import Settings
from bot.inbox import Inbox
from bot.outbound import MemoryQueue, Outbox, RedisQueue, open_queue
from flows.check import load_library
from flows.engine import Engine
from flows.model import Flow
from storage.db import connect, migrate_async
from storage.media import MediaStore
from storage.repository import ContactInfo, DataRights, Groups, Store
from storage.state import StateStore, open_state_store

__all__ = ["Runtime"]

log = logging.getLogger(__name__)

SWEEP_EVERY = 15.0  # seconds between looks for work a crashed process left behind
STALE_AFTER = timedelta(seconds=30)


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
    channels: list[Channel] = field(default_factory=list)
    groups: Groups = field(init=False)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _passes: dict[int, bool] = field(default_factory=dict)  # contact → another pass wanted

    def __post_init__(self) -> None:
        self.groups = Groups(self.store)

    @classmethod
    async def create(cls, settings: Settings, *, migrate: bool = True) -> Runtime:
        """Load and check flows (raising `FlowCheckError`), migrate, and connect."""
        flows = load_library(settings.flows_path)
        if migrate:
            await migrate_async(settings.database_url)
        store = Store(connect(settings.database_url), settings.secret_key)
        states = open_state_store(settings.redis_url)
        queue = open_queue(settings.redis_url)
        engine = Engine(
            flows, default_language=settings.default_language, idle_timeout=settings.idle_timeout
        )
        outbox = Outbox(store, queue)
        outbox.register(simulator.CHANNEL, simulator.SimulatorSender())
        inbox = Inbox(store, states, engine, outbox, media=MediaStore(settings.media_dir))
        channels = configured_channels(settings)
        for channel in channels:
            outbox.register(channel.name, channel)
            inbox.channels[channel.name] = channel
        return cls(settings, flows, store, states, queue, engine, outbox, inbox, channels)

    # what channels call (adapters.message.Hooks) ------------------------------------------

    async def receive(self, inbound: Inbound) -> bool:
        received = await self.inbox.receive(inbound)
        if received.contact_id is not None:
            self.process_soon(received.contact_id)
        return not received.duplicate

    async def delivery_status(
        self, channel: str, provider_id: str, status: str, error: str | None = None
    ) -> None:
        await self.store.update_status_by_provider_id(channel, provider_id, status, error)

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
        except Exception:
            # The message stays recorded as received; the next sweep tries again.
            log.exception("processing contact %s failed; the sweep will retry", contact_id)

    async def sweep(self) -> None:
        """Pick up what a crashed process left: unhandled inbound, unsent outbound."""
        for contact_id in await self.store.contacts_with_pending_inbound():
            await self._process(contact_id)
        stale = await self.store.stale_outbound(STALE_AFTER)
        for message_id in stale:
            await self.outbox.enqueue([message_id])

    async def run_background(self, stop: asyncio.Event, *, send: bool = True) -> None:
        """The sweeper, and (with `send`) the outbox senders, until `stop` is set."""
        jobs = [self._sweeper(stop)]
        if send:
            jobs.append(self.outbox.run(stop))
        await asyncio.gather(*jobs)

    async def _sweeper(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep()
            except Exception:
                log.exception("sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SWEEP_EVERY)

    async def drain(self) -> None:
        """Wait for background processing and queued sends (tests, the terminal)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.queue.join()

    async def start_channels(self) -> None:
        for channel in self.channels:
            await channel.start(self)

    async def close(self) -> None:
        for channel in self.channels:
            with contextlib.suppress(Exception):
                await channel.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.states.close()
        if isinstance(self.queue, RedisQueue):
            await self.queue.close()
        await self.store.close()
