"""`make demo` end to end: the local subnet's winner, the copy, the weights (about 30 s)."""

import json


def test_demo_meets_its_promises(tmp_path):
    from rich.console import Console

    from finetune.demo import run_demo

    result = run_demo(tmp_path, console=Console(file=open(tmp_path / "log.txt", "w"), width=160))
    written = json.loads((tmp_path / "result.json").read_text())
    assert written["winner_uid"] == written["expected_winner_uid"] == result["uids"]["C"]
    assert all(written["checks"].values()), written["checks"]
    assert {r["competition"] for r in written["rounds"]} == {"LOCAL_INSTRUCT", "LOCAL_REASONING"}
    assert abs(sum(written["weights"].values()) - 1.0) < 1e-9
    copy_uid = str(result["uids"]["D"])
    assert copy_uid not in written["weights"]
    reasoning = next(r for r in written["rounds"] if r["competition"] == "LOCAL_REASONING")
    assert copy_uid not in reasoning["scores"]  # rejected as a copy before scoring
    scores = {name: reasoning["scores"][str(result["uids"][name])] for name in "ABC"}
    assert scores["C"] < scores["B"] < scores["A"]
