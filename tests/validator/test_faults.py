"""The validator survives a bad chain, bad commitments, vanished repos and a full disk.

Each test runs the real validator against a devnet chain and a directory hub, with a
stand-in evaluator (the model files are what matters here, not the scores). In every case the
validator keeps going, the healthy model is scored, and the fault is recorded against the
miner who caused it. Model-file faults are in `test_faults_models.py`; kills and signals in
`test_faults_signals.py`.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import threading
import time
from collections import namedtuple

import pytest

import competitions
from finetune.chain import CallExecutor, call_with_deadline, open_chain
from finetune.errors import ChainUnreachable
from finetune.scoring import fallback_seed
from finetune.validator.state import load_state
from tests.validator.fault_models import variant
from tests.validator.fault_runner import stand_in_evaluate
from tests.validator.helpers import make_subnet, make_validator, publish_model

LOCAL = competitions.LOCAL_SCHEDULE
REASONING = competitions.LOCAL_REASONING.id
SHA = "a" * 40
HASH = "A" * 43 + "="


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again on exit: nothing listens there


def _stop_after(validator, seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, validator.stop_event.set)
    timer.start()
    return timer


def _timed_run(validator, stop_after_s: float) -> tuple[int, float]:
    timer = _stop_after(validator, stop_after_s)
    started = time.monotonic()
    try:
        code = validator.run()
    finally:
        timer.cancel()
    return code, time.monotonic() - started


class HangingChain:
    """Wraps a chain; the calls named in `hang` never return, and every call has a deadline.

    Calls run on one `CallExecutor` under `call_with_deadline`, as `BittensorChain` runs each
    SDK call, so a hung node looks to the validator exactly as it would in production: the
    hung call times out, and every call after it fails fast while it is outstanding.
    """

    def __init__(self, inner, hang: set[str], timeout_s: float = 0.3) -> None:
        self.inner, self.hang, self.timeout_s = inner, hang, timeout_s
        self.netuid = inner.netuid
        self.release = threading.Event()  # set at teardown so the hung calls return
        self._calls = CallExecutor("hanging")

    def _call(self, name: str, *args, **kwargs):
        def work():
            if name in self.hang:
                self.release.wait()
            return getattr(self.inner, name)(*args, **kwargs)

        return call_with_deadline(work, timeout_s=self.timeout_s, what=name, executor=self._calls)

    def current_block(self):
        return self._call("current_block")

    def block_hash(self, block):
        return self._call("block_hash", block)

    def metagraph(self):
        return self._call("metagraph")

    def publish_commitment(self, wallet, data):
        return self._call("publish_commitment", wallet, data)

    def read_commitment(self, hotkey):
        return self._call("read_commitment", hotkey)

    def set_weights(self, wallet, weights, *, version_key):
        return self._call("set_weights", wallet, weights, version_key=version_key)

    def validator_weights(self):
        return self._call("validator_weights")

    def weights_version(self):
        return self._call("weights_version")


@pytest.fixture
def subnet(tmp_path, tiny_model_dir):
    """A devnet with one healthy model past its eval delay."""
    chain, store = make_subnet(tmp_path, ["healthy"])
    publish_model(chain, store, tiny_model_dir, hotkey="healthy", repo_id="good/model", competition_id=REASONING)
    chain.advance(5)
    return chain, store


@pytest.fixture
def hanging():
    chains: list[HangingChain] = []

    def wrap(inner, hang):
        chains.append(HangingChain(inner, hang))
        return chains[-1]

    yield wrap
    for chain in chains:
        chain.release.set()


# ---- 1. chain unreachable or hanging -------------------------------------------------------


def test_unreachable_chain_daemon_keeps_retrying_and_stops_cleanly(tmp_path, subnet):
    _, store = subnet
    chain = open_chain(f"ws://127.0.0.1:{_closed_port()}", netuid=1, timeout_s=2)
    with pytest.raises(ChainUnreachable):
        chain.current_block()
    validator = make_validator(tmp_path, chain, store, LOCAL, evaluate=stand_in_evaluate({}))
    code, elapsed = _timed_run(validator, 0.5)
    assert code == 0 and elapsed < 5
    assert validator.results == []


def test_unreachable_weights_endpoint_does_not_lose_the_round(tmp_path, subnet):
    chain, store = subnet
    validator = make_validator(tmp_path, chain, store, LOCAL, evaluate=stand_in_evaluate({"healthy": 1.0}))
    validator.weights_chain = open_chain(f"ws://127.0.0.1:{_closed_port()}", netuid=1, timeout_s=2)
    results = validator.run_once()
    assert [m.hotkey for m in results[0].models] == ["healthy"]
    assert validator.set_weights_once() is False  # retried later by the weight-setter thread
    state = load_state(tmp_path / "state.json")
    assert state.last_weights == {"healthy": 1.0}
    assert chain.validator_weights() == {}


def test_hanging_metagraph_daemon_gives_up_and_stops(tmp_path, subnet, hanging):
    chain, store = subnet
    validator = make_validator(tmp_path, hanging(chain, {"metagraph", "current_block"}), store, LOCAL,
                               evaluate=stand_in_evaluate({}))
    code, elapsed = _timed_run(validator, 1.0)
    assert code == 0 and elapsed < 5


def test_hanging_block_reads_do_not_block_the_eval_loop(tmp_path, subnet, hanging):
    chain, store = subnet
    validator = make_validator(tmp_path, hanging(chain, {"current_block"}), store, LOCAL,
                               evaluate=stand_in_evaluate({}))
    # make_validator's cache has no grace period: the cleanup thread would delete a model
    # between its download and its check. Production keeps unreferenced models for hours.
    validator.fetcher.cache.grace_period_s = 3600

    def stop_when_checked():  # the check runs in a child: give the fork server time to start
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "healthy" not in validator.referenced_models():
            time.sleep(0.05)
        time.sleep(1.0)  # and the eval loop a few more tries at the hung block read
        validator.stop_event.set()

    watcher = threading.Thread(target=stop_when_checked, daemon=True)
    watcher.start()
    code = validator.run()
    watcher.join()
    assert code == 0
    assert validator.results == []  # no block, no round
    state = load_state(tmp_path / "state.json")  # saved on the way out
    assert state.models["healthy"].status == "ready"  # the updater thread went on


def test_hanging_block_hash_and_set_weights_do_not_block_a_round(tmp_path, subnet, hanging):
    chain, store = subnet
    validator = make_validator(tmp_path, hanging(chain, {"block_hash", "set_weights"}), store, LOCAL,
                               evaluate=stand_in_evaluate({"healthy": 1.0}))
    started = time.monotonic()
    results = validator.run_once()
    assert time.monotonic() - started < 30
    (result,) = results
    assert result.seed == fallback_seed(result.window_block)  # logged, deterministic
    assert result.models[0].score == 1.0
    assert validator.set_weights_once() is False
    assert chain.validator_weights() == {}


# ---- 2. malformed and adversarial commitments ----------------------------------------------


def _inject(chain, hotkey: str, data: str | bytes) -> None:
    """Write commitment data the devnet's own `publish_commitment` would refuse."""
    with sqlite3.connect(chain.path) as db:
        db.execute("INSERT OR REPLACE INTO commitments VALUES (?, ?, ?)", (hotkey, data, chain.current_block()))


BAD_COMMITMENTS = {
    "garbage": "\x00\x01 not a model id \ufffd",
    "empty": "",
    "overlong": "alice:model:" + SHA + ":" + HASH + ":102" + "x" * 200,
    "traversal": f"..:etc:{SHA}:{HASH}:102",
    "slashes": f"a/../b:model:{SHA}:{HASH}:102",
    "colons": f"alice:model:extra:{SHA}:{HASH}:102",
    "hexnonutf8": "0xfffefd00",
    "bytesnonutf8": b"\xff\xfe\xfd garbage",
    "badcompid": f"alice:model:{SHA}:{HASH}:999",
    "negcompid": f"alice:model:{SHA}:{HASH}:-1",
    "shorthash": f"alice:model:{SHA}:{HASH[:-2]}:102",
    "uppersha": f"alice:model:{SHA.upper()}:{HASH}:102",
}


def test_malformed_and_adversarial_commitments_are_rejected_with_reasons(tmp_path, tiny_model_dir):
    hotkeys = ["healthy", *BAD_COMMITMENTS, "othercomp", "mainnetcomp", "stolen"]
    chain, store = make_subnet(tmp_path, hotkeys)
    publish_model(chain, store, tiny_model_dir, hotkey="healthy", repo_id="good/model", competition_id=REASONING)
    for hotkey, data in BAD_COMMITMENTS.items():
        _inject(chain, hotkey, data)
    publish_model(chain, store, tiny_model_dir, hotkey="othercomp", repo_id="other/comp", competition_id=77)
    publish_model(chain, store, tiny_model_dir, hotkey="mainnetcomp", repo_id="main/net", competition_id=3)
    # A copier commits someone else's upload with the original's secure hash: bound to the
    # original hotkey, so it cannot verify for the copier.
    chain.publish_commitment("stolen", chain.read_commitment("healthy")[0])
    chain.advance(5)

    validator = make_validator(tmp_path, chain, store, LOCAL, evaluate=stand_in_evaluate({"healthy": 1.0}))
    results = validator.run_once()

    state = load_state(tmp_path / "state.json")
    reasons = {h: m.reason for h, m in state.models.items() if m.status == "rejected"}
    expected = dict.fromkeys(BAD_COMMITMENTS, "invalid_commitment")
    expected.update(othercomp="unknown_competition", mainnetcomp="unknown_competition", stolen="hash_mismatch")
    assert reasons == expected
    assert all(state.models[h].detail for h in expected)  # the broken rule, for the miner
    printed = validator.console.file.getvalue()  # the operator sees every rejection
    assert all(reason in printed for reason in ("invalid_commitment", "unknown_competition", "hash_mismatch"))
    assert [m.hotkey for m in results[0].models] == ["healthy"]
    assert chain.validator_weights()[0] == {chain.metagraph().by_hotkey("healthy").uid: 1.0}
    # Nothing escaped the cache folder, and a bad commitment is not re-checked every pass.
    assert sorted(p.name for p in (tmp_path / "models").iterdir() if not p.name.startswith(".")) == [
        "healthy", "stolen"]
    validator.config.uid_check_s = 0
    assert validator.update_step(limit=None) == []


# ---- 3. a missing or deleted repo ----------------------------------------------------------


def test_deleted_repo_and_revision_are_recorded_then_recovered(tmp_path, tiny_model_dir, tmp_path_factory):
    chain, store = make_subnet(tmp_path, ["healthy", "gone", "norev"])
    publish_model(chain, store, tiny_model_dir, hotkey="healthy", repo_id="good/model", competition_id=REASONING)
    other = variant(tiny_model_dir, tmp_path_factory.mktemp("variant") / "m")
    gone = publish_model(chain, store, other, hotkey="gone", repo_id="gone/model", competition_id=REASONING)
    norev = publish_model(chain, store, tiny_model_dir, hotkey="norev", repo_id="no/rev", competition_id=REASONING)
    chain.advance(5)
    repo_backup = tmp_path / "backup"
    shutil.copytree(store.root / "gone", repo_backup)
    shutil.rmtree(store.root / "gone")  # the whole repo deleted
    revision = store.root / "no" / "rev" / "revisions" / norev.commit
    shutil.rmtree(revision)  # only the files of the committed revision

    validator = make_validator(tmp_path, chain, store, LOCAL, evaluate=stand_in_evaluate({"healthy": 1.0}))
    results = validator.run_once()
    state = validator.state
    assert state.models["gone"].reason == "repo_not_found"
    assert state.models["norev"].reason == "download_failed"  # listed, but its files are gone
    assert [m.hotkey for m in results[0].models] == ["healthy"]

    # Both reasons are transient: when the repo is back, the next check fetches it.
    shutil.copytree(repo_backup, store.root / "gone")
    validator.config.uid_check_s = 0
    chain.advance(360)
    results = validator.run_once()
    assert state.models["gone"].status == "ready" and state.models["gone"].revision == gone.commit
    assert {m.hotkey for m in results[0].models} == {"healthy", "gone"}


# ---- 7. disk below the low watermark -------------------------------------------------------

Usage = namedtuple("Usage", "total used free")


def test_low_disk_defers_downloads_until_space_returns(tmp_path, tiny_model_dir, tmp_path_factory):
    chain, store = make_subnet(tmp_path, ["healthy", "late"])
    publish_model(chain, store, tiny_model_dir, hotkey="healthy", repo_id="good/model", competition_id=REASONING)
    chain.advance(5)
    disk = {"free": 10 * 1024**3}
    validator = make_validator(tmp_path, chain, store, LOCAL, min_free_bytes=1024**3,
                               disk_usage=lambda _path: Usage(100 * 1024**3, 0, disk["free"]),
                               evaluate=stand_in_evaluate({"healthy": 2.0, "late": 1.0}))
    assert [m.hotkey for m in validator.run_once()[0].models] == ["healthy"]

    disk["free"] = 512 * 1024**2  # below the 1 GiB watermark
    other = variant(tiny_model_dir, tmp_path_factory.mktemp("variant") / "m")
    publish_model(chain, store, other, hotkey="late", repo_id="late/model", competition_id=REASONING)
    chain.advance(360)
    results = validator.run_once()
    late = validator.state.models["late"]
    assert (late.status, late.reason) == ("pending", "disk_low")  # the validator's disk: not the miner's fault
    assert "watermark" in late.detail
    assert not (tmp_path / "models" / "late").exists()
    assert [m.hotkey for m in results[0].models] == ["healthy"]  # the cached model is still scored

    disk["free"] = 10 * 1024**3
    validator.config.uid_check_s = 0  # its next check is due
    chain.advance(360)
    results = validator.run_once()
    assert validator.state.models["late"].status == "ready", validator.state.models["late"]
    assert {m.hotkey: m.win_rate for m in results[0].models} == {"healthy": 0.0, "late": 1.0}
    assert results[0].step_weights == {"healthy": 0.0, "late": 1.0}
