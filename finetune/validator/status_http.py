"""An optional, read-only HTTP view of the validator's status, for operators and miners.

`start_status_server(get_state, host, port)` serves, from a thread of the validator:

- ``GET /status.json``: `finetune.validator.status.status_json`, as ``status --json`` prints it;
- ``GET /``: one self-contained HTML page (no scripts, no external assets): per competition
  the leaderboard, a small inline SVG plot of the score history, the models waiting and the
  rejected ones with what to do; then the weights last computed.

It is strict: only those two exact paths answer (anything else is 404, a query string
included), only GET and HEAD (any other method is 405), and it never opens a file: the page
is built from `get_state()` alone. Every string reaches the page through `html.escape` after
`finetune.text.printable`, and a Content-Security-Policy that allows no script backs that up.
It binds to 127.0.0.1 unless told otherwise. Each connection has a short socket timeout, and
views are built one at a time, so `get_state` is never called concurrently.
"""

from __future__ import annotations

import html
import ipaddress
import logging
import math
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from finetune.text import printable
from finetune.validator.state import ValidatorState
from finetune.validator.status import (
    CompetitionStatus,
    RejectedRow,
    StatusView,
    build_status,
    competition_names,
    last_round,
    number,
    ref,
    status_json,
    when,
)

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 5.0  # a client that sends nothing holds its thread no longer than this
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
                                "form-action 'none'; frame-ancestors 'none'"),
}
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
_SERIES = len(_PALETTE)  # hotkeys plotted per competition: the most weighted
_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}
th{white-space:nowrap}
td{overflow-wrap:anywhere;max-width:28em}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap;overflow-wrap:normal}
caption{text-align:left;font-weight:bold;padding:.3em 0}
.muted{color:#666}
"""


def _e(value: object) -> str:
    """Untrusted text as HTML: one bounded line, then every markup character escaped."""
    return html.escape(printable(value, 400), quote=True)


def _td(text: object, *, num: bool = False, full: str | None = None) -> str:
    """One cell; `text` is escaped here. `full`: the whole value, as a tooltip, when cut."""
    attrs = (' class="num"' if num else "") + (f' title="{_e(full)}"' if full else "")
    return f"<td{attrs}>{_e(text)}</td>"


def _ref_td(repo_id: str, revision: str) -> str:
    return _td(ref(repo_id, revision, 12), full=ref(repo_id, revision))


def _table(css: str, caption: str, headers: tuple[str, ...], rows: list[list[str]],
           row_attrs: list[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    attrs = row_attrs or [""] * len(rows)
    body = "".join(f"<tr{a}>{''.join(cells)}</tr>" for a, cells in zip(attrs, rows, strict=True))
    body = body or f'<tr><td colspan="{len(headers)}" class="muted">none</td></tr>'
    return (f'<table class="{css}"><caption>{_e(caption)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def _uid(uid: int | None) -> str:
    return "-" if uid is None else str(uid)


def _leaderboard(comp: CompetitionStatus) -> str:
    rows = [[_td(r.rank, num=True), _td(_uid(r.uid), num=True), _td(r.hotkey), _ref_td(r.repo_id, r.revision),
             _td(number(r.score), num=True), _td(number(r.win_rate), num=True), _td(number(r.weight), num=True),
             _td(r.window_block if r.window_block >= 0 else "-", num=True), _td(when(r.evaluated_at), num=True),
             _td(r.next_round or "-"), _td(r.note)] for r in comp.leaderboard]
    return _table("leaderboard", f"{comp.name} (id {comp.competition_id}): leaderboard",
                  ("#", "uid", "hotkey", "repo@revision", "score", "win rate", "weight", "window",
                   "evaluated (UTC)", "next round", "note"), rows,
                  [f' data-uid="{_uid(r.uid)}"' for r in comp.leaderboard])


def _rejected(caption: str, rows: list[RejectedRow]) -> str:
    return _table("rejected", caption, ("uid", "hotkey", "repo@revision", "reason", "retried", "detail", "why",
                                        "what to do"),
                  [[_td(r.uid, num=True), _td(r.hotkey), _ref_td(r.repo_id, r.revision), _td(r.reason),
                    _td("yes" if r.retried else "no"), _td(r.detail), _td(r.explanation), _td(r.fix)] for r in rows])


def _pending(comp: CompetitionStatus) -> str:
    return _table("pending", f"{comp.name}: waiting", ("uid", "hotkey", "repo@revision", "why", "detail"),
                  [[_td(p.uid, num=True), _td(p.hotkey), _ref_td(p.repo_id, p.revision),
                    _td(f"{p.reason}: {p.explanation}"), _td(p.detail)] for p in comp.pending])


def score_plot(comp: CompetitionStatus, width: int = 640, height: int = 220) -> str:
    """An inline SVG of the score history: one line per hotkey (the most weighted), failed
    rounds left out. Lower is better, so lower on the plot is better too."""
    left, right, top, bottom = 56, 150, 14, 30  # margins, px: axis labels left, legend right
    rounds = comp.history
    label = f"{comp.name}: score history"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="history" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(label)}"><title>{_e(label)}</title>',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
             'fill="none" stroke="#999"/>']
    finite = [s for r in rounds for s in r.scores.values() if s is not None and math.isfinite(s)]
    if not finite:
        parts.append(f'<text x="{left + 8}" y="{top + 20}" font-size="12" fill="#666">no scored rounds yet</text></svg>')
        return "".join(parts)
    low, high = min(finite), max(finite)
    pad = (high - low) * 0.05 or max(abs(high) * 0.05, 1e-6)
    low, high = low - pad, high + pad
    plot_w, plot_h, span_x = width - left - right, height - top - bottom, max(len(rounds) - 1, 1)

    def xy(index: int, score: float) -> tuple[float, float]:
        x = left + plot_w * (index / span_x if len(rounds) > 1 else 0.5)
        y = top + plot_h * (high - score) / (high - low)  # a higher score is drawn higher
        return round(x, 2), round(y, 2)

    ranked = [r.hotkey for r in comp.leaderboard][:_SERIES]
    for n, hotkey in enumerate(ranked):
        points = [xy(i, r.scores[hotkey]) for i, r in enumerate(rounds) if r.scores.get(hotkey) is not None]
        colour = _PALETTE[n]
        if len(points) > 1:
            path = " ".join(f"{x},{y}" for x, y in points)
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>')
        parts += [f'<circle cx="{x}" cy="{y}" r="2.5" fill="{colour}"/>' for x, y in points]
        uid = next((r.uid for r in comp.leaderboard if r.hotkey == hotkey), None)
        legend = f"uid {uid if uid is not None else '-'} {printable(hotkey, 12)}"
        parts.append(f'<text x="{width - right + 8}" y="{top + 12 + 16 * n}" font-size="11" fill="{colour}">'
                     f"{_e(legend)}</text>")
    for value, y in ((high, top + 10), (low, height - bottom)):
        parts.append(f'<text x="{left - 4}" y="{y}" font-size="10" text-anchor="end">{number(value, 4)}</text>')
    first, last = rounds[0].window_block, rounds[-1].window_block
    parts.append(f'<text x="{left}" y="{height - 10}" font-size="10">window {first}</text>')
    parts.append(f'<text x="{width - right}" y="{height - 10}" font-size="10" text-anchor="end">window {last}</text>')
    parts.append(f'<text x="{left}" y="{top - 3}" font-size="10" fill="#666">score (lower is better, '
                 f"{len(rounds)} rounds)</text></svg>")
    return "".join(parts)


def render_html(view: StatusView) -> str:
    """The whole page: self-contained, no script, every string escaped."""
    body = [f"<h1>Validator status</h1><p class=\"muted\">state saved {_e(when(view.updated_at))}; "
            f"page built {_e(when(view.generated_at))}</p>"]
    for comp in view.competitions:
        body.append(f'<section class="competition" id="competition-{comp.competition_id}">'
                    f"<h2>{_e(comp.name)} (id {comp.competition_id})</h2>"
                    f'<p class="muted">{_e(last_round(comp))}</p>')
        body += [_leaderboard(comp), score_plot(comp), _pending(comp),
                 _rejected(f"{comp.name}: rejected", comp.rejected), "</section>"]
    if view.other_rejected:
        body.append(_rejected("rejected without a competition", view.other_rejected))
    body.append(_table("weights", f"weights last computed (state saved {when(view.updated_at)})",
                       ("uid", "hotkey", "weight"),
                       [[_td(_uid(w.uid), num=True), _td(w.hotkey), _td(number(w.weight), num=True)]
                        for w in view.weights]))
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta http-equiv="refresh" content="60"><title>finetune validator status</title>'
            f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>")


class _Handler(BaseHTTPRequestHandler):
    server: _StatusHTTPServer
    server_version = "finetune-status"
    sys_version = ""
    protocol_version = "HTTP/1.0"  # one request per connection
    timeout = REQUEST_TIMEOUT_S

    def do_GET(self) -> None:  # the names http.server dispatches to
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def _refuse(self) -> None:
        self._send(405, "text/plain; charset=utf-8", b"read-only: GET and HEAD only\n", True, {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse

    def _answer(self, *, with_body: bool) -> None:
        route = {"/": ("text/html; charset=utf-8", render_html), "/status.json": ("application/json", status_json)}
        if self.path not in route:  # exact paths only: no traversal, no query, nothing read from disk
            self._send(404, "text/plain; charset=utf-8", b"not found\n", with_body)
            return
        content_type, render = route[self.path]
        try:
            body = render(self.server.view()).encode("utf-8")
        except Exception:  # noqa: BLE001 - a status page never takes the validator down
            logger.exception("status page: could not build the view")
            self._send(503, "text/plain; charset=utf-8", b"status unavailable\n", with_body)
            return
        self._send(200, content_type, body, with_body)

    def _send(self, code: int, content_type: str, body: bytes, with_body: bool,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for name, value in {**_HEADERS, "Content-Type": content_type, "Content-Length": str(len(body)),
                            **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # the base class's signature
        logger.debug("status http %s: %s", printable(self.client_address[0], 60), printable(format % args, 200))


class _StatusHTTPServer(ThreadingHTTPServer):
    # A thread per connection, so an idle one (a browser's preconnect) delays nobody; the
    # view is built under a lock, so `get_state` still runs one call at a time.
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], get_state: Callable[[], ValidatorState]) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._get_state = get_state
        self._names = competition_names()
        self._lock = threading.Lock()
        super().__init__(address, _Handler)

    def view(self) -> StatusView:
        with self._lock:
            return build_status(self._get_state(), names=self._names)


class StatusServer:
    """A running status server; `close()` stops it and frees the port. A context manager."""

    def __init__(self, httpd: _StatusHTTPServer) -> None:
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="status-http", daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return self._httpd.server_address[0]

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        """Stop serving and free the port. Requests still being answered finish on their own."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=REQUEST_TIMEOUT_S + 1)
        self._httpd.server_close()

    def __enter__(self) -> StatusServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_status_server(get_state: Callable[[], ValidatorState], host: str = "127.0.0.1",
                        port: int = 0) -> StatusServer:
    """Serve `/` and `/status.json` from a background thread.

    Args:
        get_state: returns the state to show. Called on a server thread, never two calls at
            once: return a snapshot the loop does not change meanwhile (a copy it hands
            over, or the state file read with `finetune.validator.status.read_state`).
        host: address to bind; 127.0.0.1 by default. Anything else serves the status to
            whoever can reach it (logged as a warning).
        port: TCP port; 0 picks a free one (see `StatusServer.port`).

    Returns:
        The running `StatusServer`; call `close()` to stop it.

    Raises:
        OSError: the address cannot be bound (in use, no such interface).
    """
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        logger.warning("status server bound to %s: the validator's status is visible beyond this machine", host)
    server = StatusServer(_StatusHTTPServer((host, port), get_state))
    logger.info("status page at %s (JSON at %sstatus.json)", server.url, server.url)
    return server


__all__ = ["REQUEST_TIMEOUT_S", "StatusServer", "render_html", "score_plot", "start_status_server"]
