"""The OpenAI-compatible routes: ``POST /v1/chat/completions``, ``POST /v1/completions`` (streamed
as Server-Sent Events with ``stream: true``) and ``GET /v1/models``, with errors in OpenAI's
shape. What they do is :class:`~dataflywheel.serve.llm.completions.Completions`; these only move
bytes. A streaming client that disconnects ends the response's iterator, which cancels its
sequences in the engine at their next step.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from dataflywheel.serve.llm.completions import Completions, Kind
from dataflywheel.serve.llm.protocol import OpenAIError

JSON = "application/json"


def add_generation_routes(app: FastAPI, completions: Completions) -> None:
    async def openai_error(_req: Request, exc: Exception) -> Response:
        assert isinstance(exc, OpenAIError)
        import orjson

        return Response(orjson.dumps(exc.body()), status_code=exc.status, media_type=JSON)

    app.add_exception_handler(OpenAIError, openai_error)

    async def complete(kind: Kind, request: Request) -> Response:
        prepared = completions.prepare(kind, await request.body())
        if prepared.request.stream:
            return StreamingResponse(completions.stream(prepared), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache"})
        return Response(await completions.answer(prepared), media_type=JSON)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await complete("chat", request)

    @app.post("/v1/completions")
    async def text(request: Request) -> Response:
        return await complete("text", request)

    @app.get("/v1/models")
    async def models() -> dict[str, object]:
        gen = completions.generator
        return {"object": "list", "data": [{"id": gen.name, "object": "model", "created": 0,
                                            "owned_by": "dataflywheel", "version": gen.version}]}
