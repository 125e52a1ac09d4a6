"""Benchmark department endpoints: one process serving every department's webhook.

Lean on purpose (a bare ASGI app, no framework) so that the receivers cost the
machine little of what the system under test needs. For each delivery it checks
the Standard Webhooks signature, counts the webhook-id, and records what the
benchmark measures. Like a real department it signs for what it leads after a
random delay and resolves it a little later — except for a fixed fraction of
cases it never answers, so that their deadlines pass and escalations fire.

``GET /stats`` returns everything recorded, for the benchmark to add up.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import signal
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvicorn

from shared.heap import settle_heap
from shared.http import EmbeddedServer
from shared.secretstore import load_secrets
from shared.webhooks import SignatureError, sign, verify
from tests.bench.figures import percentile

DISPATCHED = "civicroute.case.dispatched.v1"
ESCALATED = "civicroute.case.escalated.v1"

Scope = dict[str, Any]


class BenchDepartments:
    def __init__(
        self,
        secrets: dict[str, list[str]],
        escalation_url: str,
        sign_delay: tuple[float, float],
        resolve_delay: tuple[float, float],
        silent_fraction: float,
        seed: int,
    ) -> None:
        self.secrets = secrets
        self.escalation_url = escalation_url
        self.sign_delay = sign_delay
        self.resolve_delay = resolve_delay
        self.silent_fraction = silent_fraction
        self.rng = random.Random(seed)
        self.webhook_ids: Counter[str] = Counter()
        # source_ref -> [published_at, arrived_at, event_id, routed_at] of each dispatch to
        # the lead; routed_at is the dispatched event's time, stamped by the router
        self.lead_dispatches: dict[str, list[list[Any]]] = {}
        self.escalations: Counter[str] = Counter()
        self.events_by_type: Counter[str] = Counter()
        self.bad_signatures = 0
        self.callbacks: Counter[str] = Counter()
        self.silent_cases = 0
        self.callback_retries: Counter[str] = Counter()
        self.callback_seconds: list[float] = []  # first try to final answer, retries included
        self.client: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def silent(self, case_id: str) -> bool:
        digest = hashlib.sha256(case_id.encode()).digest()
        return int.from_bytes(digest[:4], "big") / 2**32 < self.silent_fraction

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        if scope["method"] == "GET" and path == "/stats":
            await _answer(send, 200, orjson.dumps(self.stats()))
            return
        if scope["method"] != "POST" or not path.startswith("/hooks/"):
            await _answer(send, 404, b"")
            return
        department = path.removeprefix("/hooks/")
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        try:
            webhook_id = verify(self.secrets.get(department, []), body, headers)
        except SignatureError:
            self.bad_signatures += 1
            await _answer(send, 401, b"")
            return
        await _answer(send, 204, b"")
        self.webhook_ids[webhook_id] += 1
        if self.webhook_ids[webhook_id] == 1:
            self.record(department, orjson.loads(body))

    def record(self, department: str, event: dict[str, Any]) -> None:
        kind = event.get("type", "")
        self.events_by_type[kind] += 1
        data = event.get("data") or {}
        if kind == DISPATCHED and data.get("lead") == department:
            request = data.get("request") or {}
            published = (request.get("extras") or {}).get("bench_t")
            self.lead_dispatches.setdefault(request.get("source_ref", "?"), []).append(
                [published, time.time(), event.get("id"), _epoch(event.get("time"))]
            )
            case_id = data["case_id"]
            if self.silent(case_id):
                self.silent_cases += 1
            else:
                self._spawn(self.act(department, case_id))
        elif kind == ESCALATED:
            parts = (data.get(k) for k in ("case_id", "clock", "due_at", "level", "repeat"))
            self.escalations["|".join(map(str, parts))] += 1

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def act(self, department: str, case_id: str) -> None:
        await asyncio.sleep(self.rng.uniform(*self.sign_delay))
        await self.callback(department, case_id, "sign", {})
        await asyncio.sleep(self.rng.uniform(*self.resolve_delay))
        await self.callback(department, case_id, "resolve", {"reply": "已处理完毕。Done."})

    async def callback(
        self, department: str, case_id: str, action: str, extra: dict[str, Any]
    ) -> None:
        assert self.client is not None
        body = orjson.dumps({"department": department, "actor": "bench", **extra})
        started = time.monotonic()
        # One webhook-id for every try of this callback, as a department's sender does:
        # a retry of a callback that did land gets the stored answer, nothing is done twice.
        webhook_id = f"cb_{uuid.uuid4().hex}"
        for attempt in range(30):
            headers = sign(self.secrets[department], webhook_id, body)
            headers["content-type"] = "application/json"
            url = f"{self.escalation_url}/v1/cases/{case_id}/{action}"
            try:
                async with self.client.post(url, data=body, headers=headers) as response:
                    status = response.status
                    await response.read()
            except (aiohttp.ClientError, TimeoutError) as error:
                self.callback_retries[type(error).__name__] += 1
                await asyncio.sleep(min(0.2 * (attempt + 1), 2))
                continue
            if status == 404:  # escalation has not taken the dispatch yet
                self.callback_retries["404"] += 1
                await asyncio.sleep(min(0.2 * (attempt + 1), 2))
                continue
            self.callbacks[f"{action}:{status}"] += 1
            self.callback_seconds.append(time.monotonic() - started)
            return
        self.callbacks[f"{action}:gave-up"] += 1

    def stats(self) -> dict[str, Any]:
        return {
            "lead_dispatches": self.lead_dispatches,
            "repeated_webhook_ids": sum(n - 1 for n in self.webhook_ids.values() if n > 1),
            "webhooks": sum(self.webhook_ids.values()),
            "escalations": len(self.escalations),
            "repeated_escalations": sum(n - 1 for n in self.escalations.values() if n > 1),
            "events_by_type": dict(self.events_by_type),
            "bad_signatures": self.bad_signatures,
            "callbacks": dict(self.callbacks),
            "silent_cases": self.silent_cases,
            "callback_retries": dict(self.callback_retries),
            "callback_p50_p99_s": [
                round(percentile(self.callback_seconds, pct), 3) if self.callback_seconds else None
                for pct in (50, 99)
            ],
        }


async def _answer(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def serve(args: argparse.Namespace) -> None:
    app = BenchDepartments(
        secrets=load_secrets(Path(args.secrets_file)),
        escalation_url=args.escalation_url,
        sign_delay=_pair(args.sign_delay),
        resolve_delay=_pair(args.resolve_delay),
        silent_fraction=args.silent_fraction,
        seed=args.seed,
    )
    # One process stands in for every department, each of which would have its own
    # connections: a small shared cap would queue callbacks here, not in escalation.
    app.client = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=512), timeout=aiohttp.ClientTimeout(total=30)
    )
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        backlog=4096,
        loop="uvloop",
        http="httptools",
    )
    server = EmbeddedServer(config)
    settle_heap()  # as the services do: the bench's own processes share their cores
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    await server.serve()
    await app.client.close()


def _pair(text: str) -> tuple[float, float]:
    low, high = (float(x) for x in text.split(","))
    return low, high


def _epoch(stamp: Any) -> float | None:
    """An event's ISO 8601 ``time`` as seconds since the epoch (None when absent or bad)."""
    try:
        return datetime.fromisoformat(str(stamp)).timestamp() if stamp else None
    except ValueError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description="benchmark department endpoints")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secrets-file", required=True)
    parser.add_argument("--escalation-url", required=True)
    parser.add_argument("--sign-delay", default="0.2,3", help="seconds, low,high")
    parser.add_argument("--resolve-delay", default="1,8", help="seconds after signing, low,high")
    parser.add_argument("--silent-fraction", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args))


if __name__ == "__main__":
    main()
