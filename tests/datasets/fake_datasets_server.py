"""A loopback stand-in for the datasets-server ``/size`` and ``/rows`` API and the Hub's
``/api/datasets/<id>`` (for the revision sha), with scripted failures.

Usage::

    with FakeDatasetsServer({"org/data": {("default", "train"): rows}}) as server:
        server.fail_next(429, retry_after="3")
        config = DataConfig(endpoint=server.url, hub_endpoint=server.url, backoff_s=0.001)
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Rows = list[dict[str, Any]]


@dataclass
class _Fault:
    status: int = 0  # HTTP status to answer with; 0 = no status fault
    retry_after: str | None = None
    hang_s: float = 0.0  # sleep before answering (to trip the client's timeout)
    body: bytes | None = None  # raw body to send with 200 instead of the real answer


class FakeDatasetsServer:
    """Serves `datasets` ({hub_id: {(config, split): rows}}) on 127.0.0.1, one thread per request.

    `truncated` marks row indices whose cells the server reports as truncated; `shas` gives
    the Hub sha per dataset. Faults queued with `fail_next`/`hang_next`/`garbage_next` apply
    to the next requests in order, one per request (`pass_next` queues requests answered
    normally, so a fault can target a later request); `requests` records (path, query) pairs.
    `rate_limit_offsets` ({hub_id: n}) makes ``/rows`` answer 429 for offsets above n, as the
    real server does for fineweb-edu-score-2 above offset 1,000,000. Like the real server,
    ``/rows`` reads only ``offset`` and ``length`` (default 100, at most 100) and ignores any
    other parameter, ``limit`` included.
    """

    def __init__(
        self,
        datasets: dict[str, dict[tuple[str, str], Rows]] | None = None,
        *,
        shas: dict[str, str] | None = None,
        truncated: set[int] | None = None,
        rate_limit_offsets: dict[str, int] | None = None,
    ) -> None:
        self.datasets = datasets or {}
        self.rate_limit_offsets = rate_limit_offsets or {}
        self.shas = shas or {}
        self.truncated = truncated or set()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._faults: deque[_Fault] = deque()
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def fail_next(self, status: int, *, times: int = 1, retry_after: str | None = None) -> None:
        for _ in range(times):
            self._faults.append(_Fault(status=status, retry_after=retry_after))

    def pass_next(self, *, times: int = 1) -> None:
        for _ in range(times):
            self._faults.append(_Fault())

    def hang_next(self, seconds: float, *, times: int = 1) -> None:
        for _ in range(times):
            self._faults.append(_Fault(hang_s=seconds))

    def garbage_next(self, body: bytes = b"{not json", *, times: int = 1) -> None:
        for _ in range(times):
            self._faults.append(_Fault(body=body))

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    def reset(self) -> None:
        """Forget the recorded requests and any queued faults (one server, many runs)."""
        with self._lock:
            self.requests.clear()
            self._faults.clear()

    def __enter__(self) -> FakeDatasetsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()  # wake any hanging handler
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # -- request handling (called from handler threads) --------------------------------------

    def _next_fault(self) -> _Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _answer(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        if path == "/size":
            return self._size(query.get("dataset", ""))
        if path == "/rows":
            return self._rows(query)
        if path.startswith("/api/datasets/"):
            name = urllib.parse.unquote(path[len("/api/datasets/") :])
            if name in self.shas:
                return 200, {"id": name, "sha": self.shas[name]}
            return 404, {"error": f"dataset {name} not found"}
        return 404, {"error": f"no route {path}"}

    def _size(self, dataset: str) -> tuple[int, Any]:
        if dataset not in self.datasets:
            return 404, {"error": "The dataset does not exist."}
        splits = [
            {"dataset": dataset, "config": c, "split": s, "num_rows": len(rows)}
            for (c, s), rows in self.datasets[dataset].items()
        ]
        return 200, {"size": {"splits": splits}, "pending": [], "failed": [], "partial": False}

    def _rows(self, query: dict[str, str]) -> tuple[int, Any]:
        table = self.datasets.get(query.get("dataset", ""), {})
        rows = table.get((query.get("config", ""), query.get("split", "")))
        if rows is None:
            return 404, {"error": "Not found."}
        offset, length = int(query.get("offset", 0)), int(query.get("length", 100))
        over = self.rate_limit_offsets.get(query.get("dataset", ""))
        if over is not None and offset > over:
            return 429, {"error": "too many requests"}
        if length > 100:
            return 422, {"error": "Parameter 'length' must not be greater than 100"}
        items = [
            {
                "row_idx": i,
                "row": rows[i],
                "truncated_cells": ["text"] if i in self.truncated else [],
            }
            for i in range(offset, min(offset + length, len(rows)))
        ]
        return 200, {
            "features": [],
            "rows": items,
            "num_rows_total": len(rows),
            "num_rows_per_page": 100,
            "partial": False,
        }


def _make_handler(server: FakeDatasetsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            parsed = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(parsed.query))
            with server._lock:
                server.requests.append((parsed.path, query))
            fault = server._next_fault()
            if fault and fault.hang_s:
                server._release.wait(fault.hang_s)  # then answer, too late for the client
            if fault and fault.status:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                self._send(fault.status, {"error": "scripted failure"}, headers)
                return
            if fault and fault.body is not None:
                self._send_raw(200, fault.body, {})
                return
            status, payload = server._answer(parsed.path, query)
            self._send(status, payload, {})

        def _send(self, status: int, payload: Any, headers: dict[str, str]) -> None:
            self._send_raw(status, json.dumps(payload).encode(), headers)

        def _send_raw(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout tests)

        def log_message(self, format: str, *args: object) -> None:  # silence stderr
            pass

    return Handler
