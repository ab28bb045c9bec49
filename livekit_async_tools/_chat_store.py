"""Writes the package's items into agents' contexts: batched, never the same id twice."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from livekit.agents import Agent, llm

from . import _compat
from ._model import PIPELINE, ModelTraits
from ._ports import PendingItem

__all__ = ["ChatStore", "said_after"]


@dataclass(eq=False)
class _Queue:
    waiting: list[tuple[list[llm.ChatItem], asyncio.Future[None]]] = field(default_factory=list)
    flushing: bool = False


class ChatStore:
    """The package's writes into agents' contexts.

    Writes to one agent are queued and flushed together: N results finishing at once
    cost one copy of the context, not N. Copy, filter and replace run with no await in
    between, so nothing livekit adds meanwhile is lost, and no item id or call id lands
    twice in a context (whatever copied it there before, e.g. a new agent built with
    ``chat_ctx=old.chat_ctx``). It remembers what it wrote, to restore it after livekit
    rewrites a context (`Agent.update_tools` drops calls to tools the agent lacks).
    For a model that answers tool outputs by itself, items are held until they are
    spoken (`hold`): the write that carries them is the reply.
    """

    def __init__(
        self,
        history: Callable[[], llm.ChatContext | None],
        traits: Callable[[Agent], ModelTraits] = lambda _agent: PIPELINE,
    ) -> None:
        self._history = history
        self.traits = traits
        self._held: weakref.WeakKeyDictionary[Agent, list[PendingItem]] = (
            weakref.WeakKeyDictionary()
        )
        self._queues: weakref.WeakKeyDictionary[Agent, _Queue] = weakref.WeakKeyDictionary()
        self._owned: weakref.WeakKeyDictionary[Agent, list[llm.ChatItem]] = (
            weakref.WeakKeyDictionary()
        )

    async def insert(self, agent: Agent, items: list[PendingItem]) -> None:
        """Write the chat items of ``items`` into ``agent``'s context (once per agent).

        Raises:
            Exception: What livekit raised while updating the context; the items are
                then not marked as written.
        """
        held = self._held.pop(agent, [])
        new = [p for p in [*held, *items] if p.chat_items and agent not in p.inserted_into]
        if not new:
            return
        chat_items = [item for p in new for item in p.chat_items]
        await self.write(agent, chat_items)
        self._owned.setdefault(agent, []).extend(chat_items)
        for p in new:
            if agent not in p.inserted_into:
                p.inserted_into.append(agent)
        self._record_history(new)

    def lacks(self, agent: Agent, items: list[PendingItem]) -> bool:
        """True if writing ``items`` would add something to ``agent``'s context."""
        chat_items = [item for p in items for item in p.chat_items]
        return bool(_missing(agent.chat_ctx.items, chat_items))

    def hold(self, agent: Agent, item: PendingItem) -> None:
        """Keep ``item`` out of ``agent``'s context until the next `insert` there (a
        model that answers every tool output by itself would speak it at once); the
        session's history gets it now."""
        self._held.setdefault(agent, []).append(item)
        self._record_history([item])

    def _record_history(self, items: list[PendingItem]) -> None:
        """The session's history (transcripts, reports) gets each pair once, in its
        place by creation time, like livekit's own tool calls; never an id or call id
        it already holds."""
        history = self._history()
        new = [p for p in items if not p.in_history]
        if history is None or not new:
            return
        for p in new:
            p.in_history = True
        missing = _missing(history.items, [item for p in new for item in p.chat_items])
        if missing:
            history.insert(missing)

    async def restore(self, agent: Agent) -> None:
        """Re-insert this package's items that a context rewrite dropped."""
        await self.write(agent, list(self._owned.get(agent, [])))

    async def write(self, agent: Agent, items: list[llm.ChatItem]) -> None:
        """Insert those of ``items`` that ``agent``'s context does not hold yet."""
        if not items:
            return
        queue = self._queues.get(agent)
        if queue is None:
            queue = self._queues[agent] = _Queue()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.waiting.append((items, done))
        if not queue.flushing:
            await self._flush(agent, queue)
        await asyncio.shield(done)

    @staticmethod
    async def _flush(agent: Agent, queue: _Queue) -> None:
        queue.flushing = True
        batch: list[tuple[list[llm.ChatItem], asyncio.Future[None]]] = []
        try:
            # writes asked for in this loop iteration (N results finishing together)
            # join this one: one copy of the context for the burst
            await asyncio.sleep(0)
            while queue.waiting:
                batch, queue.waiting = queue.waiting, []
                try:
                    await _write_once(agent, [item for items, _ in batch for item in items])
                except Exception as e:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(e)
                    continue
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)
        except BaseException as e:  # cancelled mid-write: no waiter may hang
            for _, fut in [*batch, *queue.waiting]:
                if not fut.done():
                    fut.set_exception(e)
            raise
        finally:
            queue.flushing = False


async def _write_once(agent: Agent, items: list[llm.ChatItem]) -> None:
    chat_ctx = agent.chat_ctx.copy()
    missing = _missing(chat_ctx.items, items)
    if missing:
        chat_ctx.insert(missing)
        await _compat.update_agent_chat_ctx(agent, chat_ctx)


def _missing(held: Sequence[llm.ChatItem], items: list[llm.ChatItem]) -> list[llm.ChatItem]:
    """Those of ``items`` whose id and call id ``held`` (and the earlier ones) lack."""
    ids = {item.id for item in held}
    calls = {_call_key(item) for item in held} - {None}
    missing: list[llm.ChatItem] = []
    for item in items:
        key = _call_key(item)
        if item.id in ids or (key is not None and key in calls):
            continue
        ids.add(item.id)
        if key is not None:
            calls.add(key)
        missing.append(item)
    return missing


def _call_key(item: llm.ChatItem) -> tuple[str, str] | None:
    if isinstance(item, (llm.FunctionCall, llm.FunctionCallOutput)):
        return item.type, item.call_id
    return None


def said_after(items: Sequence[llm.ChatItem], item_ids: set[str]) -> bool:
    """True if a said message follows the earliest of the items ``item_ids`` names.

    Walks back from the end to those items, so it only reads what came after them.
    An interrupted agent message does not count: the caller did not hear it all.
    """
    ids = set(item_ids)
    said = False
    for item in reversed(items):
        if isinstance(item, (llm.FunctionCall, llm.FunctionCallOutput)):
            if item.call_id in ids:
                ids.discard(item.call_id)
                if not ids or said:
                    return said
            continue
        if isinstance(item, llm.ChatMessage) and (
            item.role == "user" or (item.role == "assistant" and not item.interrupted)
        ):
            said = True
    return False
