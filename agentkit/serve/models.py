"""Response and request bodies of ``agentkit serve`` (the OpenAPI document is built from them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "INVALID",
    "AgentStatusModel",
    "CommitModel",
    "CostRunModel",
    "CostsModel",
    "ErrorModel",
    "HealthModel",
    "RunRequest",
    "ToolInfoModel",
    "ToolResultModel",
    "ValidationErrorModel",
    "WorkspaceModel",
]


class ErrorModel(BaseModel):
    detail: str = Field(description="What went wrong and what to do (never a traceback).")
    type: str = Field(description="Error class, e.g. NotFoundError, Unauthorized.")


class ValidationErrorModel(ErrorModel):
    errors: list[str] = Field(description="Every violation, as '<JSON path>: <message>'.")


#: the 422 answer every route with parameters or a body may give (FastAPI's default is replaced)
INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ValidationErrorModel, "description": "invalid request: every violation listed"}
}


class HealthModel(BaseModel):
    ok: bool
    version: str
    open_streams: int = Field(description="SSE responses open right now.")
    fleet_subscribers: int
    fleet_tracked: int


class ToolResultModel(BaseModel):
    content: str = Field(description="The text the model would read.")
    is_error: bool = Field(description="The tool failed (the content says why).")
    data: Any = Field(default=None, description="Structured result, when the tool has one.")


class ToolInfoModel(BaseModel):
    name: str
    description: str
    destructive: bool
    input_schema: dict[str, Any]


class AgentStatusModel(BaseModel):
    id: str = Field(examples=["claude-agent-1764240000000-a1b2c3"])
    state: str = Field(description="running | succeeded | failed | timed_out | stopped | ...")
    exit_code: int | None = None
    created: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    deadline: float | None = None
    elapsed_s: float | None = None
    workspace: str | None = None
    task: str | None = None
    turns: int | None = None
    cost_usd: float | None = None
    session_id: str | None = None
    last_text: str | None = None
    result_text: str | None = None
    is_error: bool | None = None
    oom_killed: bool = False
    error: str | None = None


class CommitModel(BaseModel):
    hash: str
    subject: str
    age: str
    timestamp: int


class WorkspaceModel(BaseModel):
    name: str
    path: str
    branch: str | None = None
    remote: str | None = None
    dirty: bool | None = None
    changed_files: int = 0
    last_commit: CommitModel | None = None
    agent_running: bool | None = None
    error: str | None = None


class CostRunModel(BaseModel):
    id: str
    workspace: str | None = None
    state: str
    finished_at: float | None = None
    cost_usd: float


class CostsModel(BaseModel):
    source: str = Field(description="Where the figures come from (today: run records).")
    currency: str
    total_usd: float
    runs: list[CostRunModel]


class RunRequest(BaseModel):
    prompt: str = Field(min_length=1, max_length=100_000)
    model: str | None = Field(default=None, max_length=200)
    system: str | None = Field(default=None, max_length=100_000)
    max_turns: int | None = Field(default=None, ge=1, le=200)
