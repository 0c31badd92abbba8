"""The OpenAI-compatible route, driven by the official `openai` client against a live jobwire, answered by
a jobwire.worker SDK worker that behaves as Runpod's vLLM worker does (generator handler, aggregated
output, raw SSE fragments when streaming)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from jobwire.worker import Worker
from server_fixtures import ENDPOINT, Running

SEEN: list[dict[str, Any]] = []


def _chunk(model: str, delta: dict[str, str], finish: str | None = None) -> str:
    document = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(document)}\n\n"


async def vllm_like(job: dict[str, Any]) -> AsyncIterator[Any]:
    """Reverses the last message, as a chat model would answer it, in vLLM's worker's output shapes."""
    SEEN.append(job["input"])
    route, body = job["input"]["openai_route"], job["input"].get("openai_input", {})
    if route == "/v1/models":
        yield {
            "object": "list",
            "data": [{"id": "rev", "object": "model", "created": 1, "owned_by": "jobwire"}],
        }
        return
    if route == "/v1/completions":
        text = body["prompt"][::-1]
        yield {
            "id": "cmpl-test",
            "object": "text_completion",
            "created": 1,
            "model": body["model"],
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
        }
        return
    if body["messages"][-1]["content"] == "fail":
        raise RuntimeError("the model crashed")
    words = body["messages"][-1]["content"][::-1].split(" ")
    if body.get("stream"):
        yield _chunk(body["model"], {"role": "assistant", "content": ""})
        for n, word in enumerate(words):
            yield _chunk(body["model"], {"content": word if n == 0 else " " + word})
        yield _chunk(body["model"], {}, "stop")
        yield "data: [DONE]\n\n"
        return
    yield {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1,
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " ".join(words)},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": len(words), "total_tokens": 1 + len(words)},
    }


@pytest.fixture
async def worker(jobwire: Running) -> AsyncIterator[Worker]:
    SEEN.clear()
    sdk = Worker(
        vllm_like,
        endpoint=ENDPOINT,
        key=jobwire.keys["worker"],
        server=jobwire.server.grpc_target,
        return_aggregate_stream=True,
    )
    task = asyncio.create_task(sdk.run())
    yield sdk
    sdk.drain()
    await asyncio.wait_for(task, 10)


@pytest.fixture
def client(jobwire: Running) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{jobwire.server.http_url}/v2/{ENDPOINT}/openai/v1",
        api_key=jobwire.keys["client"],
        max_retries=0,
    )


async def test_a_chat_completion(client: openai.AsyncOpenAI, worker: Worker) -> None:
    answer = await client.chat.completions.create(
        model="rev", messages=[{"role": "user", "content": "olleh dlrow"}]
    )
    assert answer.choices[0].message.content == "world hello"
    assert answer.usage is not None and answer.usage.completion_tokens == 2
    assert SEEN[-1] == {
        "openai_route": "/v1/chat/completions",
        "openai_input": {"model": "rev", "messages": [{"role": "user", "content": "olleh dlrow"}]},
    }


async def test_a_streamed_chat_completion_arrives_as_server_sent_events(
    client: openai.AsyncOpenAI, worker: Worker
) -> None:
    stream = await client.chat.completions.create(
        model="rev", messages=[{"role": "user", "content": "c b a"}], stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" async for chunk in stream]
    assert "".join(pieces) == "a b c"
    assert len(pieces) == 5  # role, three words, stop
    assert SEEN[-1]["openai_input"]["stream"] is True


async def test_a_text_completion_and_the_model_list(client: openai.AsyncOpenAI, worker: Worker) -> None:
    completion = await client.completions.create(model="rev", prompt="cba")
    assert completion.choices[0].text == "abc"
    models = [model.id async for model in client.models.list()]
    assert models == ["rev"]
    assert SEEN[-1] == {"openai_route": "/v1/models"}


async def test_a_failed_job_is_an_openai_error(client: openai.AsyncOpenAI, worker: Worker) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        await client.chat.completions.create(model="rev", messages=[{"role": "user", "content": "fail"}])
    assert "the model crashed" in caught.value.message


async def test_a_failed_stream_ends_with_an_error_event(jobwire: Running, worker: Worker) -> None:
    body = {"model": "rev", "messages": [{"role": "user", "content": "fail"}], "stream": True}
    async with jobwire.http.stream(
        "POST", f"/v2/{ENDPOINT}/openai/v1/chat/completions", json=body, headers=jobwire.headers()
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = (await response.aread()).decode()
    events = [line.removeprefix("data: ") for line in text.split("\n\n") if line]
    assert "the model crashed" in json.loads(events[0])["error"]["message"]
    assert events[-1] == "[DONE]"


async def test_bad_keys_and_bodies_get_openai_shaped_errors(jobwire: Running) -> None:
    bad_key = openai.AsyncOpenAI(
        base_url=f"{jobwire.server.http_url}/v2/{ENDPOINT}/openai/v1", api_key="jw_nope", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        await bad_key.chat.completions.create(model="rev", messages=[{"role": "user", "content": "x"}])
    other = openai.AsyncOpenAI(
        base_url=f"{jobwire.server.http_url}/v2/{ENDPOINT}/openai/v1",
        api_key=jobwire.keys["other"],
        max_retries=0,
    )
    with pytest.raises(openai.PermissionDeniedError):
        await other.models.list()
    url = f"/v2/{ENDPOINT}/openai/v1/chat/completions"
    for content in (b"{not json", b"[1]", b""):
        response = await jobwire.http.post(url, content=content, headers=jobwire.headers())
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
    requests = await jobwire.http.get(f"/v2/{ENDPOINT}/requests", headers=jobwire.headers())
    assert requests.json()["requests"] == []  # nothing was queued for the refused calls


async def test_a_client_that_leaves_cancels_its_job(jobwire: Running) -> None:
    """No worker: the job waits in the queue until the client gives up, which cancels it."""
    body = {"model": "rev", "messages": [{"role": "user", "content": "x"}], "stream": True}
    async with (
        httpx.AsyncClient(base_url=jobwire.server.http_url) as http,
        http.stream(
            "POST", f"/v2/{ENDPOINT}/openai/v1/chat/completions", json=body, headers=jobwire.headers()
        ) as response,
    ):
        assert response.status_code == 200
        listed = await jobwire.http.get(f"/v2/{ENDPOINT}/requests", headers=jobwire.headers())
        (job,) = listed.json()["requests"]
        assert job["status"] == "IN_QUEUE"
    # The server notices the closed connection and cancels; wait for it through status-sync.
    status = await jobwire.http.get(
        f"/v2/{ENDPOINT}/status-sync/{job['id']}?wait=10000", headers=jobwire.headers()
    )
    assert status.json()["status"] == "CANCELLED"


async def test_a_caller_that_stops_waiting_for_an_answer_cancels_its_job(jobwire: Running) -> None:
    """No worker: the non-streamed call waits until the client's timeout closes the connection."""
    body = {"model": "rev", "messages": [{"role": "user", "content": "x"}]}
    async with httpx.AsyncClient(base_url=jobwire.server.http_url, timeout=1.0) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(
                f"/v2/{ENDPOINT}/openai/v1/chat/completions", json=body, headers=jobwire.headers()
            )
    (job,) = (await jobwire.http.get(f"/v2/{ENDPOINT}/requests", headers=jobwire.headers())).json()[
        "requests"
    ]
    status = await jobwire.http.get(
        f"/v2/{ENDPOINT}/status-sync/{job['id']}?wait=10000", headers=jobwire.headers()
    )
    assert status.json()["status"] == "CANCELLED"
