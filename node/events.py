"""Committed-block events for ``/v1/events`` subscribers (and simulators).

A subscription is registered the moment :meth:`EventHub.subscribe` returns, before
the caller awaits anything, so no event published after that call is missed (the
HTTP handler subscribes before it sends the response headers). Each subscriber has
a bounded queue: one that falls ``queue_max`` events behind is dropped (its stream
ends, ``on_dropped`` logs and counts it), never buffered without bound.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]


class Subscription:
    """The events published after it was made, in order; ends when dropped or closed."""

    def __init__(self, hub: EventHub, queue_max: int) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(queue_max)
        self.dropped = False

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event

    @property
    def backlog(self) -> int:
        """Events waiting to be read (at most the hub's ``queue_max``)."""
        return self._queue.qsize()

    def _offer(self, event: Event) -> bool:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            return False
        return True

    def _end(self) -> None:
        while not self._queue.empty():  # frees the backlog; the reader sees the end
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    def close(self) -> None:
        """Leave the hub (idempotent); what is queued is discarded."""
        self._hub._discard(self)
        self._end()

    async def aclose(self) -> None:
        self.close()


class EventHub:
    def __init__(self, queue_max: int, on_dropped: Callable[[int], None] | None = None
                 ) -> None:
        """``on_dropped(backlog)`` is called for each subscriber dropped for being slow."""
        self.queue_max = queue_max
        self._on_dropped = on_dropped
        # Weak: a subscription its caller dropped without closing leaves by itself.
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()

    def __len__(self) -> int:
        return len(self._subscriptions)

    def subscribe(self) -> Subscription:
        subscription = Subscription(self, self.queue_max)
        self._subscriptions.add(subscription)
        return subscription

    def publish(self, event: Event) -> None:
        for subscription in list(self._subscriptions):
            if not subscription._offer(event):
                # A subscriber that does not keep up is ended, not silently skipped.
                backlog = subscription.backlog
                subscription.dropped = True
                subscription.close()
                if self._on_dropped is not None:
                    self._on_dropped(backlog)

    def close_all(self) -> None:
        for subscription in list(self._subscriptions):
            subscription.close()

    def _discard(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
