"""`model-selector mock-llm`: a local OpenAI-compatible chat server for the demo and the tests.

It answers as whichever model it is asked for, streams with server-sent events when asked
to, and echoes the `x-selected-model` header it received (`x-mock-received-selected-model`)
so that a caller can see what the gateway sent upstream. Two test hooks: `--api-key`
makes it demand `Authorization: Bearer <key>`, and a request body field
`"mock_error": {"status": 429, "message": "..."}` makes it fail with that status.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}},
                        status_code=status)


def _last_user_text(messages: list) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
            return str(content or "")
    return ""


def _chunks(completion_id: str, model: str, words: list[str]) -> Iterator[str]:
    def event(delta: dict, finish: str | None = None) -> str:
        chunk = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()),
                 "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(chunk)}\n\n"

    yield event({"role": "assistant", "content": ""})
    for i, word in enumerate(words):
        yield event({"content": word if i == 0 else " " + word})
    yield event({}, "stop")
    yield "data: [DONE]\n\n"


def create_mock_app(api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="model-selector mock LLM")

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": "mock", "object": "model", "created": 0, "owned_by": "mock-llm"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
            return _error(401, "Incorrect API key provided.", "authentication_error")
        try:
            body = await request.json()
            model, messages = body["model"], body["messages"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "the body must be JSON with `model` and `messages`")
        if isinstance(body.get("mock_error"), dict):
            failure = body["mock_error"]
            return _error(int(failure.get("status", 500)), str(failure.get("message", "mock failure")), "mock_error")
        question = _last_user_text(messages)
        answer = f"[{model}] mock answer to: {question[:200]}"
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        echo = {"x-mock-received-selected-model": request.headers.get("x-selected-model", "")}
        if body.get("stream"):
            return StreamingResponse(_chunks(completion_id, model, answer.split(" ")),
                                     media_type="text/event-stream", headers=echo)
        prompt_tokens = sum(len(_last_user_text([m]).split()) for m in messages if isinstance(m, dict))
        completion_tokens = len(answer.split())
        return JSONResponse({
            "id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }, headers=echo)

    return app
