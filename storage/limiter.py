"""One send-rate cap per sender shared by every process: a GCRA limiter in Redis.

The same algorithm as `consulta.adapters.delivery.LocalPacing` (see there), kept in Redis so
`serve` and every `worker` draw on one bucket per sender. A Lua script takes a cell or says
how long to wait, in one round trip, on Redis's own clock (hosts' clocks don't matter).
While Redis is unreachable each process paces itself with its fallback, at the full rate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.commands.core import AsyncScript

from consulta.gcra import cell, retry_delay, tolerance
from consulta.storage import keys

__all__ = ["RedisPacing"]

log = logging.getLogger(__name__)

RETRY_REDIS_AFTER = 5.0  # seconds paced in-process after Redis failed, before asking it again
REPLY_WAITING = ":reply"  # after a sender's key: a reply waits for it

# KEYS[1]: the sender's tat (µs, Redis time); KEYS[2]: present while a reply waits for this
# sender. ARGV: the interval and this call's tolerance (µs; bulk's may be smaller), 1 for bulk,
# and the slack (µs: how much of a late send the next one may make up). Returns 0 when the send
# may go, else the microseconds to wait. Bulk takes no cell while a reply waits; a reply that
# must wait says so for its wait and a quarter cell more. The tat key outlives its tat by one
# interval, so a missing key always means "idle long enough". TIME before a write is allowed
# because scripts replicate their effects (Redis ≥ 5's default, the only way since 7).
ACQUIRE = """
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local bulk = ARGV[3] == '1'
if bulk then
  local waiting = redis.call('PTTL', KEYS[2])
  if waiting > 0 then
    return waiting * 1000
  end
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat and tat - now > tolerance then
  local wait = tat - now - tolerance
  if not bulk then
    redis.call('SET', KEYS[2], '1', 'PX', math.ceil((wait + interval / 4) / 1000))
  end
  return math.ceil(wait)
end
local slack = tonumber(ARGV[4])
local new_tat = interval + (tat and math.max(tat, now - slack) or now)
redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
  'PX', math.ceil((new_tat - now + interval) / 1000))
return 0
"""


class _Pacing(Protocol):  # consulta.adapters.delivery.Pacing, which storage does not import
    async def wait(
        self, key: str, rate: float, burst: float = 1.0, *, bulk: bool = False
    ) -> None: ...


class RedisPacing:
    """`consulta.adapters.delivery.Pacing` across every process sharing one Redis.

    Args:
        client: its own Redis client (`consulta.storage.state.redis_client`); `close` closes it.
        fallback: the in-process pacing used while Redis is unreachable (`LocalPacing`).
    """

    def __init__(self, client: aioredis.Redis, *, fallback: _Pacing) -> None:
        self.redis = client
        self.fallback = fallback
        self._acquire: AsyncScript = client.register_script(ACQUIRE)
        self._local_until = 0.0  # monotonic time until which Redis is not asked
        self._warned = False

    async def wait(self, key: str, rate: float, burst: float = 1.0, *, bulk: bool = False) -> None:
        interval, slack = cell(rate)
        args = [round(interval * 1e6), round(tolerance(rate, burst, bulk) * 1e6), int(bulk)]
        args.append(round(slack * 1e6))
        while time.monotonic() >= self._local_until:
            try:
                wait_us = await self._acquire(
                    keys=[keys.PACE + key, keys.PACE + key + REPLY_WAITING],
                    args=args,
                )
            except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
                self._redis_away(exc)
                break
            self._warned = False
            if not wait_us:
                return
            await asyncio.sleep(retry_delay(int(wait_us) / 1_000_000, rate, bulk))
        await self.fallback.wait(key, rate, burst, bulk=bulk)

    def _redis_away(self, exc: Exception) -> None:
        self._local_until = time.monotonic() + RETRY_REDIS_AFTER
        if not self._warned:  # once an outage
            self._warned = True
            log.warning(
                "Redis unreachable (%s): pacing sends in this process alone", type(exc).__name__
            )

    async def close(self) -> None:
        await self.redis.aclose()
