"""Request and response shapes of the OpenAI-compatible API (pydantic; field names are OpenAI's).

Unknown top-level fields are accepted and ignored, as OpenAI clients send fields this server has
no use for (``user``, ``logprobs: false`` ...); fields that would change the answer and are not
supported (``stream``, ``n`` > 1, tools) are refused by :mod:`shirg.serve.inputs`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ShirgSettings(BaseModel):
    """The ``shirg`` body field: selection and generation settings of one request."""

    model_config = ConfigDict(extra="forbid")

    k: int | None = Field(default=None, description="hi-detail tokens kept (default round(G*G/3))")
    score: Literal["text", "saliency", "head"] | None = None
    text_pool: Literal["max", "mean"] | None = None
    sim_stride: int | None = Field(default=None, ge=1, description="text term per s x s cell (1: per token)")
    merge: bool | None = None
    coverage: bool | None = None
    coords: bool | None = None
    weights: list[float] | None = Field(default=None, min_length=3, max_length=3)
    steps: int | None = Field(default=None, ge=1, description="denoising steps")
    block_length: int | None = Field(default=None, ge=1)
    schedule: Literal["uniform", "shift"] | None = None
    overlay: bool = Field(default=False, description="return the kept-token overlay as a PNG data URL")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0)
    seed: int | None = None
    n: int | None = None
    stream: bool | None = None
    shirg: ShirgSettings | None = None


class CompareRequest(BaseModel):
    """The page's request: one image (data URL) and question, answered in several modes."""

    model_config = ConfigDict(extra="forbid")

    image: str
    question: str
    modes: list[str] = Field(min_length=1, max_length=16)
    k: int | None = None
    score: Literal["text", "saliency", "head"] | None = None
