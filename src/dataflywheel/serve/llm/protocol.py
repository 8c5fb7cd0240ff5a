"""The OpenAI-compatible request bodies and error shape, as pydantic models.

What existing OpenAI clients send to ``/v1/chat/completions`` and ``/v1/completions`` is read
here; a field this server does not implement (tools, logprobs, penalties, ...) is answered 400
naming it, unless it holds its neutral value (``presence_penalty: 0``, ``logprobs: false``,
``null``), which several clients send by default. Errors use OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, so clients raise their usual exceptions.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Role = Literal["system", "developer", "user", "assistant"]

NEUTRAL: dict[str, Any] = {"presence_penalty": 0, "frequency_penalty": 0, "logprobs": False, "echo": False,
                           "best_of": 1, "parallel_tool_calls": True}
"""Unimplemented parameters accepted when they hold these values (or null)."""
IGNORED = frozenset({"user", "metadata", "store", "service_tier"})
"""Parameters that change nothing about the answer; accepted and ignored."""


class OpenAIError(Exception):
    """An error answered in OpenAI's shape with HTTP ``status``."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Role
    content: str


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class _Sampled(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def unsupported(self) -> list[str]:
        """The extra fields this server does not implement (with a non-neutral value)."""
        extra = self.model_extra or {}
        return sorted(k for k, v in extra.items()
                      if k not in IGNORED and v is not None and not (k in NEUTRAL and v == NEUTRAL[k]))


class ChatRequest(_Sampled):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_Sampled):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("at least one prompt")
        return v

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


def parse_request(kind: type[ChatRequest] | type[CompletionRequest], payload: Any) -> Any:
    """``payload`` read as ``kind``; a 400 in OpenAI's shape naming the first bad field."""
    if not isinstance(payload, dict):
        raise OpenAIError(400, "the request body must be a JSON object")
    try:
        request = kind.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise OpenAIError(400, f"{where}: {first.get('msg', 'invalid')}", param=where or None,
                          code="invalid_value") from None
    bad = request.unsupported()
    if bad:
        raise OpenAIError(400, f"unsupported parameter{'s' if len(bad) > 1 else ''}: {', '.join(bad)} "
                          "(this server implements max_tokens, max_completion_tokens, temperature, top_p, n, "
                          "stop, seed, stream, stream_options)", param=bad[0], code="unsupported_parameter")
    return request
