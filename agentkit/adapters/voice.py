"""Voice: agentkit tools as ElevenLabs conversational-AI *client tools*.

The ElevenLabs agent (its LLM, speech in and out) decides when to call a tool; the SDK delivers
the call to this process, which runs it through :meth:`Toolset.call` and answers with a short,
speakable summary. Registration uses the SDK's own registry,
``elevenlabs.conversational_ai.conversation.ClientTools``::

    client_tools = register_voice_tools(connection.toolset)       # inside the toolset's loop
    conversation = AsyncConversation(client, agent_id, requires_auth=True,
                                     client_tools=client_tools, audio_interface=...)

**Event loops.** ``ClientTools`` runs handlers on its own event loop (a thread it starts) unless
given one. A toolset may hold loop-bound resources (an SSH connection, a Docker session), so
each call is sent back to the toolset's *home* loop — the loop running when
:func:`register_voice_tools` was called, or ``loop=`` — with
``asyncio.run_coroutine_threadsafe`` and awaited from the SDK's loop; when the SDK runs on the
home loop itself the call is awaited directly. The SDK's ``tool_call_id`` is stripped from the
arguments before validation, and ``null`` values are treated as not given.

The ElevenLabs agent must declare the tools too: :func:`client_tool_configs` gives their
definitions (name, description, parameters) in ElevenLabs' client-tool shape.

**Deny by default.** Voice has no approval step and no per-person allowlist (whoever the
microphone hears is obeyed), so tools marked ``destructive`` (stop an agent, push, delete a
workspace) are neither registered nor declared unless ``allow_destructive=True``.

Needs the ``voice`` extra: ``pip install 'claude-agentkit[voice]'``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from agentkit.errors import ConfigError
from agentkit.tools.base import ToolResult

if TYPE_CHECKING:
    from elevenlabs.conversational_ai.conversation import ClientTools

    from agentkit.config import Settings
    from agentkit.tools.toolset import Toolset

EXTRA_HINT = "the voice adapter needs the voice extra: pip install 'claude-agentkit[voice]'"
DEFAULT_MAX_CHARS = 300
DEFAULT_MAX_SENTENCES = 3
#: Keys the SDK adds to a tool call's parameters that are not tool arguments.
SDK_KEYS = frozenset({"tool_call_id"})

_FENCE = re.compile(r"```.*?(```|$)", re.DOTALL)
_LINK = re.compile(r"\[([^\[\]\n]{1,300})\]\([^()\s]{1,2000}\)")
_MARKUP = re.compile(r"[*_`#>|]+")
_BULLET = re.compile(r"^[ \t]*(?:[-+•]|\d{1,9}[.)])[ \t]+", re.MULTILINE)
#: Only this much of a reply is read for speech (every pattern above is linear; this bounds it).
MAX_SPEECH_INPUT = 32_768
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


class VoiceToolError(Exception):
    """Raised from a handler so the SDK answers the call with ``is_error: true``."""


def speech_summary(
    text: str,
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    max_sentences: int = DEFAULT_MAX_SENTENCES,
) -> str:
    """``text`` made short and speakable: markup removed, at most ``max_sentences`` sentences
    (each line counts as one) and ``max_chars`` characters; "And more." marks a cut."""
    text = text[:MAX_SPEECH_INPUT]
    text = _FENCE.sub(" (code omitted) ", text)
    text = _LINK.sub(r"\1", text)
    text = _BULLET.sub("", text)
    text = _MARKUP.sub("", text)
    sentences: list[str] = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if not line:
            continue
        for sentence in _SENTENCE.split(line):
            if sentence:
                sentences.append(sentence if sentence[-1] in ".!?:" else sentence + ".")
    if not sentences:
        return ""
    suffix = " And more."
    out: list[str] = []
    for sentence in sentences[:max_sentences]:
        if len(" ".join([*out, sentence])) <= max_chars:
            out.append(sentence)
            continue
        if not out:  # a first sentence that is too long: cut it at a word
            room = max(max_chars - len(suffix) - 1, 1)
            cut = sentence[:room].rsplit(" ", 1)[0].rstrip(",;:")
            return f"{cut}…{suffix}"
        break
    spoken = " ".join(out)
    if len(out) < len(sentences) and len(spoken) + len(suffix) <= max_chars:
        spoken += suffix
    return spoken


class VoiceTools:
    """Runs toolset calls for an ElevenLabs ``ClientTools`` registry.

    Args:
        toolset: the tools.
        loop: the toolset's home event loop; default the running loop (or none: the SDK's).
        max_chars: longest spoken answer.
        max_sentences: most sentences spoken.
    """

    def __init__(
        self,
        toolset: Toolset,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        max_chars: int = DEFAULT_MAX_CHARS,
        max_sentences: int = DEFAULT_MAX_SENTENCES,
    ) -> None:
        self.toolset = toolset
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        self.loop = loop
        self.max_chars = max_chars
        self.max_sentences = max_sentences

    async def call(self, name: str, parameters: dict[str, Any]) -> ToolResult:
        """Run tool ``name`` on the home loop (from any loop) and return its full result."""
        # the SDK's own keys are not arguments; null means "not given" (defaults apply)
        arguments = {k: v for k, v in parameters.items() if k not in SDK_KEYS and v is not None}
        home = self.loop
        if home is None or home is asyncio.get_running_loop():
            return await self.toolset.call(name, arguments)
        if home.is_closed() or not home.is_running():
            raise VoiceToolError("agentkit's event loop is not running; restart the app")
        future = asyncio.run_coroutine_threadsafe(self.toolset.call(name, arguments), home)
        return await asyncio.wrap_future(future)

    def handler(self, name: str) -> Callable[[dict[str, Any]], Awaitable[str]]:
        """The async handler registered for tool ``name``: a speakable summary, or raises
        :class:`VoiceToolError` (the SDK then answers with ``is_error: true``)."""

        async def handle(parameters: dict[str, Any]) -> str:
            result = await self.call(name, parameters)
            spoken = speech_summary(
                result.content, max_chars=self.max_chars, max_sentences=self.max_sentences
            )
            if result.is_error:
                raise VoiceToolError(spoken or f"{name} failed.")
            return spoken or "Done."

        handle.__name__ = f"agentkit_{name}"
        return handle

    def register(
        self,
        client_tools: ClientTools | None = None,
        *,
        names: Iterable[str] | None = None,
        allow_destructive: bool = False,
    ) -> ClientTools:
        """Register the tools (or only ``names``) in ``client_tools`` (a new one by default).

        Destructive tools are left out unless ``allow_destructive`` (naming one without it is
        an error): voice has no approval step.
        """
        registry = client_tools if client_tools is not None else _new_client_tools()
        if names is None:
            wanted = voice_tool_names(self.toolset, allow_destructive=allow_destructive)
        else:
            wanted = list(names)
        for name in wanted:
            if name not in self.toolset:
                raise ValueError(f"unknown tool {name!r}")
            if self.toolset[name].destructive and not allow_destructive:
                raise ValueError(
                    f"tool {name!r} is destructive and voice cannot ask for approval: pass "
                    "allow_destructive=True to register it anyway"
                )
        for name in wanted:
            registry.register(name, self.handler(name), is_async=True)
        return registry


def voice_tool_names(toolset: Toolset, *, allow_destructive: bool = False) -> list[str]:
    """The tools voice offers by default: all but the destructive ones (unless allowed)."""
    return [t.name for t in toolset if allow_destructive or not t.destructive]


def _new_client_tools() -> ClientTools:
    try:
        from elevenlabs.conversational_ai.conversation import ClientTools
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(EXTRA_HINT) from exc
    return ClientTools()


def register_voice_tools(
    toolset: Toolset,
    client_tools: ClientTools | None = None,
    *,
    names: Iterable[str] | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    max_sentences: int = DEFAULT_MAX_SENTENCES,
    allow_destructive: bool = False,
) -> ClientTools:
    """Register ``toolset``'s tools as ElevenLabs client tools; returns the ``ClientTools``.

    Call it from the event loop that owns the toolset (or pass ``loop=``). Destructive tools
    are left out unless ``allow_destructive=True``.
    """
    voice = VoiceTools(toolset, loop=loop, max_chars=max_chars, max_sentences=max_sentences)
    return voice.register(client_tools, names=names, allow_destructive=allow_destructive)


def register_from_settings(
    toolset: Toolset, settings: Settings, client_tools: ClientTools | None = None
) -> ClientTools:
    """:func:`register_voice_tools` with ``AGENTKIT_VOICE_MAX_CHARS`` from ``settings``."""
    return register_voice_tools(toolset, client_tools, max_chars=settings.voice_max_chars)


def _property(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One parameter in ElevenLabs' restricted schema (type, description, enum, items)."""
    if "$ref" in schema:
        schema = {**defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), **schema}
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        concrete = [o for o in options if o.get("type") != "null"]
        if concrete:
            merged = {**concrete[0], **{k: v for k, v in schema.items() if k not in ("anyOf",)}}
            return _property(merged, defs)
    kind = schema.get("type", "string")
    description = schema.get("description") or ""
    if "default" in schema:
        description = f"{description} Default: {schema['default']}.".strip()
    out: dict[str, Any] = {"type": kind, "description": description or "value"}
    if kind == "array":
        out["items"] = _property(schema.get("items", {"type": "string"}), defs)
    elif kind == "object":
        out["properties"] = {
            key: _property(value, defs) for key, value in schema.get("properties", {}).items()
        }
        out["required"] = list(schema.get("required", []))
    elif "enum" in schema:
        out["enum"] = [str(v) for v in schema["enum"]]
    return out


def client_tool_configs(
    toolset: Toolset, *, response_timeout_secs: int = 120, allow_destructive: bool = False
) -> list[dict[str, Any]]:
    """Tool definitions for the ElevenLabs agent (``type: client``), from the same schemas.

    Pass them in the agent's ``conversation_config.agent.prompt.tools`` when creating or updating
    it (API or dashboard). ElevenLabs accepts a subset of JSON Schema, so optional parameters
    keep their default in the description. Destructive tools are left out unless
    ``allow_destructive=True`` (as in :func:`register_voice_tools`).
    """
    configs: list[dict[str, Any]] = []
    for item in toolset:
        if item.destructive and not allow_destructive:
            continue
        schema = item.input_schema
        defs = schema.get("$defs", {})
        configs.append(
            {
                "type": "client",
                "name": item.name,
                "description": item.description,
                "expects_response": True,
                "response_timeout_secs": response_timeout_secs,
                "parameters": {
                    "type": "object",
                    "properties": {
                        key: _property(value, defs)
                        for key, value in schema.get("properties", {}).items()
                    },
                    "required": list(schema.get("required", [])),
                },
            }
        )
    return configs
