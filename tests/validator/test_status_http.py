"""The read-only status endpoint (`finetune.validator.status_http`), and its page in Chromium."""

from __future__ import annotations

import http.client
import json
import re
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest

import competitions
from finetune.validator.state import load_state
from finetune.validator.status import StatusView, build_status
from finetune.validator.status_http import render_html, score_plot, start_status_server
from tests.validator.fault_models import variant
from tests.validator.fault_runner import stand_in_evaluate
from tests.validator.helpers import make_subnet, make_validator, publish_model
from tests.validator.test_status import SCRIPT, crafted_state

CHROMIUM = Path("/usr/bin/chromium")
ESCAPED_SCRIPT = "&lt;script&gt;alert(1)&lt;/script&gt;"


def _request(server, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        connection.putrequest(method, path, skip_host=False, skip_accept_encoding=True)  # path sent as is
        connection.endheaders()
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def server():  # read-only: one server answers every request test of this module
    state = crafted_state()
    with start_status_server(lambda: state) as running:
        yield running


def test_it_binds_to_loopback_by_default(server):
    assert server.host == "127.0.0.1" and server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}/"


def test_status_json_is_the_status_view(server):
    status, headers, body = _request(server, "GET", "/status.json")
    assert status == 200 and headers["content-type"] == "application/json"
    served = StatusView.model_validate_json(body)
    expected = build_status(crafted_state(), now=served.generated_at)
    assert served == expected
    assert json.loads(body)["competitions"][0]["leaderboard"][0]["hotkey"] == "alpha"


def test_the_page_has_the_leaderboard_a_plot_and_no_markup_from_miners(server):
    status, headers, body = _request(server, "GET", "/")
    page = body.decode("utf-8")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src" not in headers["content-security-policy"]  # default-src 'none': no script at all
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    for uid in (1, 2, 3, 6):
        assert f'<tr data-uid="{uid}">' in page
    assert "<svg" in page and "<polyline" in page
    assert ESCAPED_SCRIPT in page and "<script" not in page
    assert "[/x][bold red]pwned[/bold red]" in page  # console markup means nothing here: shown as is
    assert "\x1b" not in page and "\u202e" not in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # no external assets


def test_head_answers_without_a_body(server):
    status, headers, body = _request(server, "HEAD", "/")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0


@pytest.mark.parametrize("path", ["/x", "/status.json/", "/../status.json", "/%2e%2e/etc/passwd",
                                  "/status.json?path=/etc/passwd", "/?file=state.json", "/index.html",
                                  "http://127.0.0.1/status.json", "/etc/passwd"])
def test_every_other_path_is_not_found(server, path):
    status, _, body = _request(server, "GET", path)
    assert status == 404 and b"root:" not in body and b"competitions" not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_it_is_read_only(server, method):
    status, headers, _ = _request(server, method, "/status.json")
    assert status == 405 and headers["allow"] == "GET, HEAD"


def test_a_failing_state_is_a_503_and_the_server_keeps_serving():
    calls = []

    def get_state():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("dictionary changed size during iteration")
        return crafted_state()

    with start_status_server(get_state) as running:
        assert _request(running, "GET", "/status.json")[0] == 503
        assert _request(running, "GET", "/status.json")[0] == 200


def test_close_frees_the_port():
    running = start_status_server(crafted_state)
    port = running.port
    running.close()
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))  # would fail with EADDRINUSE if still served
    running.close()  # twice is harmless


def test_the_plot_of_a_competition_without_rounds_says_so():
    state = crafted_state()
    state.competition(102).rounds = []
    (comp,) = build_status(state).competitions
    svg = score_plot(comp)
    assert svg.startswith("<svg") and "no scored rounds yet" in svg and "<polyline" not in svg


def test_the_page_of_an_empty_state():
    from finetune.validator.state import ValidatorState

    page = render_html(build_status(ValidatorState()))
    assert "weights last computed" in page and "<table" in page


# ---- the page in a real browser, from a real round on the local subnet ---------------------


def _inject(chain, hotkey: str, data: str) -> None:
    """Commitment text the devnet's own `publish_commitment` would refuse."""
    with sqlite3.connect(chain.path) as db:
        db.execute("INSERT OR REPLACE INTO commitments VALUES (?, ?, ?)", (hotkey, data, chain.current_block()))


def _dump_dom(url: str, profile: Path) -> str:
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--no-proxy-server",
               f"--user-data-dir={profile}", "--dump-dom", url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent: apt-get install -y chromium")
def test_the_page_in_headless_chromium_after_a_real_round(tmp_path, tiny_model_dir):
    reasoning = competitions.LOCAL_REASONING.id
    chain, store = make_subnet(tmp_path, ["alpha", "bravo", "late", "attacker"])
    publish_model(chain, store, tiny_model_dir, hotkey="alpha", repo_id="good/alpha", competition_id=reasoning)
    publish_model(chain, store, variant(tiny_model_dir, tmp_path / "bravo"), hotkey="bravo", repo_id="good/bravo",
                  competition_id=reasoning)
    _inject(chain, "attacker", f"{SCRIPT}:{'a' * 40}:{'A' * 43}=:{reasoning}")
    chain.advance(5)
    validator = make_validator(tmp_path, chain, store, competitions.LOCAL_SCHEDULE,
                               evaluate=stand_in_evaluate({"alpha": 1.0, "bravo": 2.0}))
    validator.run_once()
    chain.advance(360)  # the next sync window: a second round of the kept models
    publish_model(chain, store, variant(tiny_model_dir, tmp_path / "late", "  "), hotkey="late",
                  repo_id="good/late", competition_id=reasoning)  # still inside its eval delay
    validator.run_once()
    state = load_state(tmp_path / "state.json")
    assert len(state.competition(reasoning).rounds) == 2
    assert state.models["attacker"].reason == "invalid_commitment" and state.models["late"].status == "pending"
    # A state edited by hand (or by a bug) with a repo name no commitment could carry.
    state.models["bravo"] = state.models["bravo"].model_copy(update={"repo_id": SCRIPT})
    uids = {h: state.models[h].uid for h in ("alpha", "bravo", "late", "attacker")}

    with start_status_server(lambda: state) as running:
        dom = _dump_dom(running.url, tmp_path / "chromium-profile")

    assert "<script" not in dom  # the hostile names became text, not elements
    assert dom.count(ESCAPED_SCRIPT) >= 2  # the leaderboard's repo and the rejected commitment's detail
    section = re.search(rf'<section class="competition" id="competition-{reasoning}">.*?</section>', dom, re.S)
    assert section is not None, dom[:2000]
    section = section.group(0)
    board = re.search(r'<table class="leaderboard">.*?</table>', section, re.S).group(0)
    rows = re.findall(r'<tr data-uid="(\d+)">(.*?)</tr>', board, re.S)
    assert [int(uid) for uid, _ in rows] == [uids["alpha"], uids["bravo"]]  # the winner first
    assert "1.000000" in rows[0][1] and "good/alpha" in rows[0][1] and "2.000000" in rows[1][1]
    assert ESCAPED_SCRIPT in rows[1][1]
    svg = re.search(r"<svg.*?</svg>", section, re.S).group(0)
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 4  # two hotkeys, two rounds each
    pending = re.search(r'<table class="pending">.*?</table>', section, re.S).group(0)
    assert "good/late" in pending and "eval_delay" in pending
    rejected = "".join(re.findall(r'<table class="rejected">.*?</table>', dom, re.S))
    assert "invalid_commitment" in rejected and f'<td class="num">{uids["attacker"]}</td>' in rejected
