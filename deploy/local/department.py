"""A department's webhook endpoint, for demos, tests and benchmarks.

It verifies every delivery's Standard Webhooks signature with the department's
secret, records what arrived (counting repeats of a webhook-id), and can act
like a department: sign for what it is dispatched, through escalation's signed
callback API. Tests drive its answers (slow, 500, 429, 410, hang) per department.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import structlog
from fastapi import FastAPI, Request, Response

from shared.http import EmbeddedServer, make_server
from shared.logs import configure_logging
from shared.secretstore import load_secrets
from shared.webhooks import SignatureError, sign, verify

log = structlog.get_logger("department")

DISPATCHED = "civicroute.case.dispatched.v1"


@dataclass(frozen=True)
class Received:
    department: str
    webhook_id: str
    event: dict[str, Any]
    arrived: float

    @property
    def case_id(self) -> str:
        return str(self.event.get("subject") or self.event.get("data", {}).get("case_id"))

    @property
    def type(self) -> str:
        return str(self.event.get("type"))


# Decides the HTTP answer for one delivery: (status, headers, delay seconds).
Behaviour = Callable[[str, dict[str, Any]], Awaitable[tuple[int, dict[str, str], float]]]


async def always_ok(_department: str, _event: dict[str, Any]) -> tuple[int, dict[str, str], float]:
    return 200, {}, 0.0


@dataclass
class DepartmentReceiver:
    secrets: dict[str, list[str]]
    escalation_url: str | None = None
    auto_sign: bool = True
    port: int = 0
    behaviour: Behaviour = always_ok
    received: list[Received] = field(default_factory=list)
    deliveries: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rejected: int = 0
    sign_results: dict[str, int] = field(default_factory=dict)
    _server: EmbeddedServer | None = None
    _task: asyncio.Task[None] | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _client: httpx.AsyncClient | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> FastAPI:
        app = FastAPI(title="demo department receiver")

        @app.post("/hooks/{department}")
        async def hook(department: str, request: Request) -> Response:
            body = await request.body()
            try:
                verify(self.secrets.get(department, []), body, dict(request.headers))
            except SignatureError as error:
                self.rejected += 1
                return Response(f"bad signature: {error}", status_code=401)
            event = orjson.loads(body)
            status, headers, delay = await self.behaviour(department, event)
            if delay:
                await asyncio.sleep(delay)
            if not 200 <= status < 300:
                return Response(status_code=status, headers=headers)
            webhook_id = request.headers["webhook-id"]
            self.deliveries[webhook_id] += 1
            first = self.deliveries[webhook_id] == 1
            if first:
                item = Received(department, webhook_id, event, asyncio.get_running_loop().time())
                self.received.append(item)
                self.arrived.set()
                log.info(
                    "department received",
                    department=department,
                    case_id=item.case_id,
                    event_type=item.type,
                )
                if (
                    self.auto_sign
                    and item.type == DISPATCHED
                    and department == event["data"]["lead"]
                ):
                    task = asyncio.create_task(self._sign(department, item.case_id))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            return Response(status_code=204)

        return app

    async def _sign(self, department: str, case_id: str) -> None:
        if self.escalation_url is None or self._client is None:
            return
        body = orjson.dumps({"department": department, "actor": f"{department}-duty"})
        headers = sign(self.secrets[department], f"cb_{uuid.uuid4().hex}", body)
        headers["content-type"] = "application/json"
        url = f"{self.escalation_url}/v1/cases/{case_id}/sign"
        for attempt in range(20):
            try:
                response = await self._client.post(url, content=body, headers=headers)
            except httpx.HTTPError:
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            if response.status_code == 404:  # escalation has not consumed the dispatch yet
                await asyncio.sleep(0.2 * (attempt + 1))
                headers = sign(self.secrets[department], f"cb_{uuid.uuid4().hex}", body)
                headers["content-type"] = "application/json"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                # Unavailable for now (a database restart answers 503): the same callback
                # again, same webhook-id, so it counts once if the first one got through.
                self.sign_results[case_id] = response.status_code
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            self.sign_results[case_id] = response.status_code
            log.info(
                "department signed",
                department=department,
                case_id=case_id,
                status=response.status_code,
            )
            return

    async def start(self, host: str = "127.0.0.1") -> None:
        self._client = httpx.AsyncClient(timeout=5)
        self._server = make_server(self.app(), host, self.port)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.02)
        if self.port == 0:
            self.port = self._server.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    def of_type(self, event_type: str) -> list[Received]:
        return [r for r in self.received if r.type == event_type]


async def _serve(args: argparse.Namespace) -> None:
    receiver = DepartmentReceiver(
        secrets=load_secrets(Path(args.secrets_file)),
        escalation_url=args.escalation_url,
        auto_sign=not args.no_sign,
        port=args.port,
    )
    await receiver.start()
    log.info("department receiver listening", url=receiver.url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await receiver.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Demo department webhook receiver")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secrets-file", required=True)
    parser.add_argument("--escalation-url", default=None)
    parser.add_argument("--no-sign", action="store_true", help="receive only; never sign for cases")
    args = parser.parse_args()
    configure_logging("department")
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
