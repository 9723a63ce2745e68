"""A stand-in for an agent's control API: scripted answers on loopback, every request kept.

The CLI's pool commands are tested against it without starting a mesh.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: (method, path) -> a function of the request body giving (HTTP status, JSON or text body).
Routes = dict[tuple[str, str], Callable[[Any], tuple[int, object]]]


class FakeAgent:
    def __init__(
        self, routes: Routes, tokens: tuple[str, ...] = (), proves_for: str | None = None
    ) -> None:
        """``tokens``: the agent proves it holds these (``POST /v1/auth/proof``), as a real
        agent does before the CLI sends a token over plain http; ``proves_for``: the address
        it proves for, if not its own (a real agent elsewhere, reached through a relay)."""
        self.proves_for = proves_for
        self.routes = dict(routes)
        if tokens:
            self.routes[("POST", "/v1/auth/proof")] = self._prove(tokens)
        self.requests: list[tuple[str, str, Any]] = []
        self.authorization: list[str | None] = []
        """Each request's Authorization header, in the order of ``requests``."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive when it proves tokens: the proof and the request share a connection.
            protocol_version = "HTTP/1.1" if tokens else "HTTP/1.0"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.requests.append((self.command, self.path, body))
                fake.authorization.append(self.headers.get("Authorization"))
                route = fake.routes.get((self.command, self.path))
                status, answer = (404, "not found") if route is None else route(body)
                data = (answer if isinstance(answer, str) else json.dumps(answer)).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args: object) -> None:
                pass

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that hung up: not the test's output

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _prove(self, tokens: tuple[str, ...]) -> Callable[[Any], tuple[int, object]]:
        from sdmesh.agent.api_tokens import digest, endpoint_label, proof, token_id

        def answer(body: Any) -> tuple[int, object]:
            for token in tokens:
                if token_id(digest(token)) == body.get("id"):
                    here = self.proves_for or endpoint_label(self.server.server_address)
                    return 200, {"proof": proof(digest(token), body["nonce"], here)}
            return 404, "no such token"

        return answer

    def __enter__(self) -> FakeAgent:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def statuses(*answers: dict[str, Any]) -> Callable[[Any], tuple[int, object]]:
    """Answer with each status in turn, then keep answering with the last one."""
    remaining: Iterator[dict[str, Any]] = iter(answers)
    last: list[dict[str, Any]] = []

    def answer(_: Any) -> tuple[int, object]:
        for item in remaining:
            last[:] = [item]
            break
        return 200, last[0]

    return answer


def pool_status(
    pool: str, state: str, *components: tuple[str, str, str], generation: int = 1
) -> dict[str, Any]:
    """A ``GET /v1/pools/{pool}`` answer; components as (path, host, state)."""
    return {
        "pool": pool,
        "state": state,
        "reason": "",
        "shepherd": "h1",
        "generation": generation,
        "components": [
            {
                "path": path,
                "kind": "KvmDomain" if path.endswith("vm") else "Qcow2OverlayBackend",
                "host": host,
                "state": component_state,
                "domain": f"sdm-{pool}-vm" if path.endswith("vm") else "",
            }
            for path, host, component_state in components
        ],
    }


def closed_port_url() -> str:
    """A loopback URL nothing listens on (the port was just free, and below the ephemeral
    range: a client cannot connect to itself there)."""
    from sdmesh.testing.api import free_port

    return f"http://127.0.0.1:{free_port()}"
