"""`ServeState`: what the routes share - the connection, the fleet hub, counters, a model client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request

from agentkit.errors import ConfigError
from agentkit.redact import Redactor
from agentkit.serve.sse import StreamCounter

if TYPE_CHECKING:
    import anthropic

    from agentkit.config import Settings
    from agentkit.connect import Connection
    from agentkit.serve.fleet import FleetHub

__all__ = ["ServeState", "serve_state"]


@dataclass
class ServeState:
    """Set up by the app's lifespan; ``connection``/``fleet`` are ``None`` until it ran."""

    settings: Settings
    connection: Connection | None = None
    fleet: FleetHub | None = None
    streams: StreamCounter = field(default_factory=StreamCounter)
    _model_client: anthropic.AsyncAnthropic | None = None
    _fallback_redactor: Redactor = field(default_factory=Redactor)

    @property
    def conn(self) -> Connection:
        if self.connection is None:
            raise ConfigError("the server is not connected yet (its lifespan has not started)")
        return self.connection

    @property
    def hub(self) -> FleetHub:
        if self.fleet is None:
            raise ConfigError("the fleet stream is not available (the lifespan has not started)")
        return self.fleet

    @property
    def redactor(self) -> Redactor:
        if self.connection is not None:
            return self.connection.toolset.context.redactor
        return self._fallback_redactor

    def model_client(self) -> anthropic.AsyncAnthropic:
        """One Anthropic client for every ``POST /v1/runs`` (closed with the app)."""
        if self._model_client is None:
            import anthropic

            settings = self.settings
            self._model_client = anthropic.AsyncAnthropic(
                api_key=settings.require_api_key(),
                base_url=settings.anthropic_base_url,
                max_retries=settings.max_retries,
            )
        return self._model_client

    async def aclose(self) -> None:
        if self._model_client is not None:
            await self._model_client.close()
            self._model_client = None


def serve_state(request: Request) -> ServeState:
    state: ServeState = request.app.state.agentkit
    return state
