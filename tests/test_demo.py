"""`make demo` end to end: the local subnet's winner, the copy, the weights (about 30 s)."""

import json


def test_demo_meets_its_promises(tmp_path):
    from rich.console import Console

    from finetune.demo import run_demo

    result = run_demo(tmp_path, console=Console(file=open(tmp_path / "log.txt", "w"), width=160))
    written = json.loads((tmp_path / "result.json").read_text())
    assert all(written["checks"].values()), written["checks"]
    assert {r["competition"] for r in written["rounds"]} == {"LOCAL_INSTRUCT", "LOCAL_REASONING"}
    # A winner per competition, the one its round table shows first at the best win rate.
    assert set(written["winners"]) == {"LOCAL_INSTRUCT", "LOCAL_REASONING"}
    assert written["winners"]["LOCAL_REASONING"] == written["expected_winners"]["LOCAL_REASONING"] == result["uids"]["C"]
    assert written["winners"]["LOCAL_INSTRUCT"] in {result["uids"]["E"], result["uids"]["F"]}
    for round_ in written["rounds"]:
        assert round_["winner_uid"] == written["winners"][round_["competition"]]
        best = max(round_["win_rates"].values())
        assert round_["win_rates"][str(round_["winner_uid"])] == best
        for failures in round_["task_failures"].values():  # a failed task says why
            assert all(":" in why for why in failures.values()), failures
    assert abs(sum(written["weights"].values()) - 1.0) < 1e-9
    copy_uid = str(result["uids"]["D"])
    assert copy_uid not in written["weights"]
    reasoning = next(r for r in written["rounds"] if r["competition"] == "LOCAL_REASONING")
    assert copy_uid not in reasoning["scores"]  # rejected as a copy before scoring
    scores = {name: reasoning["scores"][str(result["uids"][name])] for name in "ABC"}
    assert scores["C"] < scores["B"] < scores["A"]
