"""Steering notes: text the LLM sees before its next request (never spoken)."""

from __future__ import annotations

from typing import Any, Literal

from livekit.agents import Agent, llm

from ._chat_store import ChatStore
from ._ports import Services
from .gate import Gate

__all__ = ["Steering"]


class Steering:
    """Places steering notes in the target agent's context and, until the LLM has
    been asked again, carries them to whichever agent becomes current."""

    def __init__(self, services: Services, gate: Gate, store: ChatStore) -> None:
        self._services = services
        self._gate = gate
        self._store = store
        self._unseen: list[tuple[llm.ChatMessage, list[Agent]]] = []

    def steer(self, text: str, *, origin: Agent | None, on_handoff: str | None = None) -> None:
        """Record a note for ``origin`` (``None``: the current agent)."""
        if origin is None:
            target = self._gate.current()
        else:
            target = self._gate.record_target(
                origin, on_handoff or self._services.options.on_handoff
            )
        if target is None:
            raise RuntimeError("the session has no current agent; start it first")
        # a model that takes no system messages gets the note as a user message (its
        # text says the caller did not say it)
        role: Literal["system", "user"] = (
            "system" if self._store.traits(target).system_notes else "user"
        )
        note = llm.ChatMessage(
            role=role, content=[self._services.options.steer_template.format(text=text)]
        )
        self._unseen.append((note, [target]))
        self._place(target, note)

    def _place(self, agent: Agent, note: llm.ChatMessage) -> None:
        self._services.spawn(self._store.write(agent, [note]), name="async-tool:steer")

    def on_session_event(self, ev: Any) -> None:
        """The LLM is asked again once the agent thinks: the notes have been seen."""
        if getattr(ev, "new_state", None) == "thinking":
            self.on_agent_maybe_changed()
            self._unseen.clear()

    def on_agent_maybe_changed(self) -> None:
        """Carry unseen notes to a newly current agent (e.g. after a handoff)."""
        if not self._unseen:
            return
        current = self._gate.current()
        if current is None:
            return
        for note, placed in self._unseen:
            if current not in placed:
                placed.append(current)
                self._place(current, note)
