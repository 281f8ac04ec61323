"""A soak test: many rounds on the local subnet with hostile and healthy miners at once.

Hostile miners re-commit every round: markup and garbage commitments, a new revision of a
model each time (churn), a JSON bomb, a config whose check exhausts its child's memory, a
model whose scoring fails. The validator must score the healthy miners exactly in every
round, and its file descriptors, threads, child processes, resident memory and disk must
stay flat once it has warmed up.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
from pathlib import Path

import competitions
from tests.validator.fault_models import copy_model, variant
from tests.validator.fault_runner import stand_in_evaluate
from tests.validator.helpers import make_subnet, make_validator, publish_model

LOCAL = competitions.LOCAL_SCHEDULE
REASONING = competitions.LOCAL_REASONING.id
ROUNDS = 9
WARM_UP = 3  # rounds after which every cache, pool and fork server exists
HEALTHY = {"good1": 1.0, "good2": 2.0}
SHA, HASH = "a" * 40, "A" * 43 + "="


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _children() -> int:
    me = str(os.getpid())
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
                if handle.read().rsplit(")", 1)[1].split()[1] == me:
                    count += 1
        except (OSError, IndexError):
            continue
    return count


def _rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _disk_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def _inject(chain, hotkey: str, data: str) -> None:
    with sqlite3.connect(chain.path) as db:
        db.execute("INSERT OR REPLACE INTO commitments VALUES (?, ?, ?)", (hotkey, data, chain.current_block()))


def _json_bomb(src: Path, dst: Path, round_no: int) -> Path:
    copy_model(src, dst)
    with open(dst / "config.json", "w") as handle:  # 2 MiB of nested lists: over the size cap
        handle.write("[" + "[]," * (700_000 + round_no) + "[]]")
    return dst


def _layers_bomb(src: Path, dst: Path, round_no: int) -> Path:
    copy_model(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config["num_hidden_layers"] = 200_000 + round_no
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_many_rounds_of_hostile_and_healthy_miners(tmp_path, tiny_model_dir):
    hostile = ["markup", "garbage", "churn", "jsonbomb", "layers", "failing"]
    chain, store = make_subnet(tmp_path, [*HEALTHY, *hostile])
    for i, hotkey in enumerate(HEALTHY):
        model = variant(tiny_model_dir, tmp_path / f"healthy{i}", tag=" " * (i + 1))
        publish_model(chain, store, model, hotkey=hotkey, repo_id=f"good/m{i}", competition_id=REASONING)
    scores = {**HEALTHY, "churn": 3.0, "failing": math.inf}
    validator = make_validator(tmp_path, chain, store, LOCAL, evaluate=stand_in_evaluate(scores))
    validator.fetcher.check_memory_bytes = 256 << 20
    validator.fetcher.cache.grace_period_s = 6 * 3600
    validator.config.uid_check_s = 0
    samples = []
    for round_no in range(ROUNDS):
        work = tmp_path / f"round{round_no}"
        work.mkdir()
        _inject(chain, "markup", f"[/x][bold]{round_no}:{SHA}:{HASH}:{REASONING}")
        _inject(chain, "garbage", "\x00\x1b[2J" * (round_no + 1))
        churn = variant(tiny_model_dir, work / "churn", tag="!" * (round_no + 1))
        publish_model(chain, store, churn, hotkey="churn", repo_id="evil/churn", competition_id=REASONING)
        publish_model(chain, store, _json_bomb(tiny_model_dir, work / "json", round_no), hotkey="jsonbomb",
                      repo_id="evil/json", competition_id=REASONING)
        publish_model(chain, store, _layers_bomb(tiny_model_dir, work / "layers", round_no), hotkey="layers",
                      repo_id="evil/layers", competition_id=REASONING)
        failing = variant(tiny_model_dir, work / "failing", tag="?" * (round_no + 1))
        publish_model(chain, store, failing, hotkey="failing", repo_id="evil/failing", competition_id=REASONING)
        chain.advance(360)
        (result,) = validator.run_once()
        by_hotkey = result.by_hotkey()
        assert "good1" in by_hotkey  # the leader is in every round (good2, beaten fairly, drops out)
        assert all(by_hotkey[h].score == HEALTHY[h] for h in HEALTHY if h in by_hotkey), round_no
        models = validator.state.models
        assert models["markup"].reason == models["garbage"].reason == "invalid_commitment"
        assert models["jsonbomb"].reason == "oversized_file"
        assert models["layers"].reason == "check_out_of_memory"
        assert math.isinf(by_hotkey["failing"].score)
        samples.append((_fds(), threading.active_count(), _children(), _rss_mib(), _disk_mib(tmp_path / "models")))
    print("round: fds threads children rss_mib disk_mib", *enumerate(samples), sep="\n")  # shown with -s
    warm = samples[WARM_UP:]
    fds, threads, children, rss, disk = (list(column) for column in zip(*warm, strict=True))
    # Descriptors come and go with the garbage collector (sqlite connections, pipes): no growth
    # from one three-round stretch to the next, not a constant count.
    assert max(fds[-3:]) <= max(fds[:3]) + 2, fds
    assert max(threads) - min(threads) <= 1, threads
    assert max(children) <= 2, children  # the fork server, and at most one child being reaped
    assert rss[-1] - rss[0] < 64, rss  # MiB, over six rounds of hostile uploads
    assert disk[-1] <= disk[0] * 1.2 + 1, disk  # superseded revisions do not pile up
    assert validator.state.last_weights.keys() <= {*HEALTHY, "churn"}
