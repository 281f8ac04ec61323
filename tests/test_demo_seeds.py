"""`make demo-seeds` end to end, on its quick setting (about 80 s on two cores): the proof, in CI,
that a round of each seeds competition runs on the local subnet with a winner and reasons."""

import json


def test_seeds_demo_meets_its_promises(tmp_path):
    from rich.console import Console

    from finetune.demo_seeds import run_seeds_demo

    result = run_seeds_demo(tmp_path, console=Console(file=open(tmp_path / "log.txt", "w"), width=200), quick=True)
    written = json.loads((tmp_path / "result.json").read_text())
    assert all(written["checks"].values()), written["checks"]
    assert {r["competition"] for r in written["rounds"]} == {"LOCAL_EFFICIENT", "LOCAL_MERGING"}
    for round_ in written["rounds"]:  # the winner is the best HELM score, and each task says why
        assert round_["ranking"] == "helm"
        winner = str(round_["winner_uid"])
        assert round_["helm"][winner] == max(round_["helm"].values())
        product = 1.0
        for rate in round_["task_win_rates"][winner].values():
            product *= rate
        assert abs(product - round_["helm"][winner]) < 1e-12
    merging = next(r for r in written["rounds"] if r["competition"] == "LOCAL_MERGING")
    assert all(s["kind"] == "merge" and s["peak_memory_bytes"] > 0 for s in merging["submissions"].values())
    assert result["reproduction"]["reproduced"] and result["reproduction"]["winner"] == "B"
