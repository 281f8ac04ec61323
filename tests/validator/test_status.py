"""The status view (`finetune.validator.status`) and the reasons table (`reasons`)."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import pytest
from rich.console import Console

from finetune.validator import reasons
from finetune.validator.__main__ import main
from finetune.validator.fetcher import _CHILD_REASONS
from finetune.validator.state import (
    EvalRecord,
    RoundSummary,
    TrackedModel,
    ValidatorState,
    save_state,
)
from finetune.validator.status import (
    StatusView,
    build_status,
    print_status,
    read_state,
    render_plain,
    render_tables,
    status_json,
)
from finetune.validator.updater import TRANSIENT_REASONS

ROOT = Path(__file__).resolve().parents[2]
COMP = 102  # LOCAL_REASONING
SCRIPT = "<script>alert(1)</script>"
MARKUP = "[/x][bold red]pwned[/bold red]"
ESCAPE = "\x1b[31mred\x1b[0m"
BIDI = "\u202eevil"
NOW = 1_800_000_000.0


def _model(hotkey: str, uid: int, **fields) -> TrackedModel:
    fields.setdefault("repo_id", f"{hotkey}/model")
    fields.setdefault("revision", hotkey[0] * 40)
    fields.setdefault("competition_id", COMP)
    fields.setdefault("status", "ready")
    return TrackedModel(hotkey=hotkey, uid=uid, commitment="c", checked_at=NOW - 60, **fields)


def crafted_state() -> ValidatorState:
    """Two ranked models (one with a hostile repo), a tie broken by score, one waiting for
    its delay, one queued, one queued for a retry, rejections with hostile details."""
    state = ValidatorState(updated_at=NOW)
    state.models = {m.hotkey: m for m in [
        _model("alpha", 1),
        _model("bravo", 2, repo_id=SCRIPT),
        _model("charlie", 3),
        _model("delta", 4, status="pending", reason="eval_delay", detail="eligible in 7 blocks"),
        _model("echo", 5),
        _model("foxtrot", 6),
        _model("golf", 7, status="rejected", reason="hash_mismatch", detail=f"{MARKUP} {ESCAPE} {BIDI}\nline2"),
        _model("hotel", 8, status="rejected", reason="TemplateError", detail="raise_exception"),
        _model("india", 9, status="rejected", reason="invalid_commitment", repo_id="", revision="",
               competition_id=-1, detail=f"bad {SCRIPT}"),
        _model("juliet", 10, status="rejected", reason="download_failed", detail="hub unreachable"),
    ]}
    comp = state.competition(COMP)
    comp.ema = {"alpha": 0.3, "bravo": 0.1, "charlie": 0.1}
    comp.keep = ["alpha", "bravo"]
    comp.pending = ["echo", "foxtrot"]
    comp.last_window = 720
    scores = [(0, {"alpha": 2.0, "bravo": 2.5, "charlie": 2.25}), (360, {"alpha": 1.5, "bravo": math.inf}),
              (720, {"alpha": 1.25, "bravo": 2.125, "charlie": 1.875, "foxtrot": math.inf})]
    for n, (window, by_hotkey) in enumerate(scores):
        for hotkey, score in by_hotkey.items():
            record = EvalRecord(window_block=window, revision=state.models[hotkey].revision, score=score,
                                win_rate=1.0 if hotkey == "alpha" else 0.0,
                                reason="" if math.isfinite(score) else "crashed: stand-in failure")
            state.record_eval(COMP, hotkey, record, keep_last=3)
        comp.rounds.append(RoundSummary(window_block=window, block=window + 5, seed=n, finished_at=NOW - 1000 + n,
                                        winner="alpha", scores=by_hotkey, weights=dict(comp.ema)))
    state.last_weights = {"alpha": 0.75, "bravo": 0.25}
    return state


@pytest.fixture
def view() -> StatusView:
    return build_status(crafted_state(), now=NOW)


def test_leaderboard_is_ordered_by_weight_then_score(view):
    (comp,) = view.competitions
    assert (comp.competition_id, comp.name, comp.last_window) == (COMP, "LOCAL_REASONING", 720)
    board = comp.leaderboard
    assert [r.hotkey for r in board] == ["alpha", "charlie", "bravo", "foxtrot"]  # charlie: tie, lower score
    assert [r.rank for r in board] == [1, 2, 3, 4]
    alpha = board[0]
    assert (alpha.uid, alpha.score, alpha.win_rate, alpha.weight) == (1, 1.25, 1.0, 0.3)
    assert (alpha.window_block, alpha.evaluated_at, alpha.next_round) == (720, NOW - 998, "kept")
    assert board[2].repo_id == SCRIPT and board[2].score == 2.125
    foxtrot = board[3]
    assert foxtrot.score is None and foxtrot.note.startswith("crashed") and foxtrot.next_round == "queued"


def test_pending_models_say_why(view):
    pending = {p.hotkey: p for p in view.competitions[0].pending}
    assert set(pending) == {"delta", "echo", "foxtrot"}
    assert (pending["delta"].reason, pending["delta"].blocks_left) == ("eval_delay", 7)
    assert "eval delay" in pending["delta"].explanation
    assert pending["echo"].reason == "queued" and "next round" in pending["echo"].explanation
    assert pending["foxtrot"].reason == "retry" and "inf" in pending["foxtrot"].detail


def test_rejected_models_carry_the_explanation_and_the_fix(view):
    rejected = {r.hotkey: r for r in view.competitions[0].rejected}
    assert set(rejected) == {"golf", "hotel", "juliet"}
    entry = reasons.lookup("hash_mismatch")
    assert (rejected["golf"].explanation, rejected["golf"].fix, rejected["golf"].retried) == (
        entry.explanation, entry.fix, False)
    assert rejected["juliet"].retried is True
    assert "own name" in rejected["hotel"].explanation and "evaluate_model.py" in rejected["hotel"].fix
    (other,) = view.other_rejected  # no competition: the commitment did not parse
    assert other.hotkey == "india" and other.reason == "invalid_commitment"
    assert [(w.uid, w.hotkey, w.weight) for w in view.weights] == [(1, "alpha", 0.75), (2, "bravo", 0.25)]


def test_json_is_strict_and_round_trips(view):
    text = status_json(view)

    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    data = json.loads(text, parse_constant=no_constants)
    assert data["competitions"][0]["leaderboard"][3]["score"] is None  # a failed score is null, not Infinity
    assert data["competitions"][0]["history"][1]["scores"]["bravo"] is None
    assert StatusView.model_validate_json(text) == view


def test_the_view_never_changes_the_state():
    state = crafted_state()
    before = state.model_dump_json()
    build_status(state, now=NOW)
    assert state.model_dump_json() == before


def test_hostile_text_is_shown_literally_and_escaped_in_plain_lines(view):
    lines = render_plain(view)
    text = "\n".join(lines)
    assert SCRIPT in text and MARKUP in text  # as written: plain text, nothing interprets it
    assert "\x1b" not in text and "\u202e" not in text
    assert "\\x1b[31mred" in text and "\\u202eevil" in text
    (golf,) = [line for line in lines if "hotkey golf" in line]
    assert "\\x0aline2" in golf  # a newline in a detail cannot start a line of its own
    assert not any(line.startswith("line2") for line in lines)


def test_hostile_text_is_never_console_markup_in_the_tables(view):
    console = Console(file=io.StringIO(), width=250, force_terminal=False, color_system=None)  # markup on
    for renderable in render_tables(view):
        console.print(renderable)
    out = console.file.getvalue()
    assert "[/x][bold red]pwned[/bold red]" in out  # printed, not parsed (parsing would raise or hide it)
    assert SCRIPT in out
    assert "\x1b" not in out and "\\x1b[31mred" in out


def test_numbers_are_never_cut_even_on_a_narrow_terminal():
    state = crafted_state()
    state.models["alpha"] = state.models["alpha"].model_copy(update={"repo_id": "n" * 36 + "/" + "m" * 60})
    state.competition(COMP).history["alpha"][-1].score = 123456.654321
    console = Console(file=io.StringIO(), width=100, force_terminal=False, color_system=None)
    for renderable in render_tables(build_status(state, now=NOW)):
        console.print(renderable)
    out = console.file.getvalue()
    assert "123456.654321" in out and "0.300000" in out and "1.000000" in out
    assert "…" not in out


def test_print_status_reads_the_file_without_touching_it(tmp_path):
    path = tmp_path / "state.json"
    save_state(crafted_state(), path)
    leftover = tmp_path / ".state.json.abc.tmp"  # a running validator's save in progress
    leftover.write_text("{")
    out = io.StringIO()
    assert print_status(path, out=out) == 0  # not a TTY: plain lines
    assert out.getvalue().startswith("validator state saved") and "#1 uid 1 hotkey alpha" in out.getvalue()
    assert leftover.exists()
    out = io.StringIO()
    assert print_status(path, as_json=True, out=out) == 0
    assert json.loads(out.getvalue())["weights"][0]["hotkey"] == "alpha"
    out = io.StringIO()
    assert print_status(path, plain=False, out=out) == 0  # the tables a terminal gets
    assert "LOCAL_REASONING (id 102): leaderboard" in out.getvalue() and "┃" in out.getvalue()


def test_an_unreadable_state_is_an_error_and_stays_where_it_is(tmp_path, capsys):
    path = tmp_path / "state.json"
    path.write_text("{not json")
    assert print_status(path, out=io.StringIO()) == 2
    assert "cannot read the state file" in capsys.readouterr().err
    assert path.read_text() == "{not json" and not list(tmp_path.glob("*.bad-*"))
    path.write_text(json.dumps({"version": 999}))
    with pytest.raises(Exception, match="state version 999"):
        read_state(path)


def test_the_command_line(tmp_path, capsys, monkeypatch):
    path = tmp_path / "state.json"
    save_state(crafted_state(), path)
    assert main(["status", "--state-path", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["competitions"][0]["leaderboard"][0]["hotkey"] == "alpha"
    assert main(["status", "--state-path", str(path), "--plain"]) == 0
    assert "pending (3):" in capsys.readouterr().out
    monkeypatch.setenv("FINETUNE_STATE_PATH", str(path))  # the validator's own setting, by default
    assert main(["status", "--plain"]) == 0
    assert "leaderboard (4):" in capsys.readouterr().out
    assert main(["reasons", "copy", "timeout: exceeded 720s"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("copy: ") and out[1].startswith("timeout: ") and "Fix:" in out[1]


# ---- the reasons table -------------------------------------------------------------------------

ASKED_FOR = ("non_finite", "negative_score", "check_failed", "aborted", "timeout", "out_of_memory", "copy",
             "not_competitive", "check_out_of_memory", "check_timeout", "check_crashed", "oversized_file",
             "too_many_tensors", "missing_weights", "unused_weights", "eval_delay", "hash_mismatch")
# Codes raised in finetune/ that are never recorded against a miner's model, and why.
NOT_RECORDED = {
    "not_reproduced": "eval data: a task is dropped for everyone", "revision_mismatch": "eval data or the hub",
    "rate_limited": "chain or data rate limits", "weights_version": "the validator stops",
    "no_hf_token": "upload", "commitment_mismatch": "upload", "merge_mismatch": "merge tool",
    "empty_upload": "upload", "file_not_found": "download_failed", "hub_offline": "download_failed",
    "hub_timeout": "download_failed", "hub_unreachable": "download_failed", "hub_error": "download_failed",
    "hub_unavailable": "download_failed", "state_unreadable": "the status command's own error",
    "bad_repo_id": "invalid_commitment first", "bad_revision": "invalid_commitment first",
    "bad_hotkey": "download_failed", "dest_not_empty": "download_failed",
    "storage": "download_failed", "chain": "the chain, not a model",
    # class defaults in finetune/errors.py that no recorded error keeps
    "error": "every raise names its reason", "rejected": "every ModelRejected names its reason",
    "config": "settings", "unknown_id": "settings", "data_unavailable": "a task is dropped for everyone",
    "chain_unreachable": "chain", "chain_timeout": "chain", "chain_busy": "chain",
    "not_registered": "the validator's hotkey", "space_limit": "upload",
    "http_error": "eval data: the reference's rules abandon the round, nothing is recorded",
}


def test_every_code_asked_for_is_explained():
    for code in ASKED_FOR:
        entry = reasons.lookup(code)
        assert entry is not None and entry.explanation and entry.fix, code
        assert reasons.explain(code).startswith(f"{code}: ") and "Fix: " in reasons.explain(code)


def test_every_code_the_code_can_record_is_in_the_table():
    # `reason="x"` in a raise or a record, `reason = "x"` as a class default or a choice,
    # `"reason": "x"` in a state update, `failed("x", ...)` in the scoring worker
    patterns = [re.compile(r"""\breason\s*(?::\s*str\s*)?=\s*["']([a-z_]+)["']"""),
                re.compile(r"""["']reason["']\s*:\s*["']([a-z_]+)["']"""),
                re.compile(r"""\bfailed\(\s*["']([a-z_]+)["']""")]
    found = set()
    for path in (ROOT / "finetune").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for pattern in patterns:
            found |= set(pattern.findall(text))
    assert {"hash_mismatch", "too_many_tensors", "copy", "nan", "negative_score"} <= found  # the grep works
    found |= set(TRANSIENT_REASONS) | set(_CHILD_REASONS.values())
    known = {r.code for r in reasons.REASONS}
    missing = sorted(found - known - set(NOT_RECORDED))
    assert not missing, f"add these to finetune/validator/reasons.py (or NOT_RECORDED here): {missing}"


def test_retried_matches_the_updater():
    for reason in reasons.REASONS:
        if reason.stage != "scoring":
            assert reason.retried == (reason.code in TRANSIENT_REASONS), reason.code


def test_codes_are_unique_and_ordered():
    codes = [r.code for r in reasons.REASONS]
    assert len(codes) == len(set(codes))
    assert [r.order for r in reasons.REASONS] == list(range(1, len(codes) + 1))
    stages = list(reasons.STAGES)
    positions = [stages.index(r.stage) for r in reasons.REASONS]
    assert positions == sorted(positions), "the table runs stage by stage, in the order the checks run"


def test_explain_never_raises_and_echoes_no_markup():
    assert reasons.explain("RuntimeError: boom").startswith("RuntimeError: ")
    for hostile in ("", SCRIPT, MARKUP, ESCAPE, None, 42):
        line = reasons.explain(hostile)  # type: ignore[arg-type]
        assert "<" not in line.split(":")[0] and "[" not in line.split(":")[0] and "\x1b" not in line


def test_docs_miner_lists_every_reason_in_check_order():
    text = (ROOT / "docs" / "miner.md").read_text(encoding="utf-8")
    assert reasons.render_markdown() in text, (
        "docs/miner.md is stale: run `python -m finetune.validator reasons --update-doc docs/miner.md`")
    listed = re.findall(r"^\| \d+ \| `([a-z_]+)` \|", text, re.M)
    assert listed == [r.code for r in reasons.REASONS]


def test_update_doc_rewrites_only_the_generated_part(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{reasons.BEGIN_MARKER}\nSTALE TEXT\n{reasons.END_MARKER}\noutro\n", encoding="utf-8")
    assert reasons.update_doc(doc) is True
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "STALE TEXT" not in text
    assert reasons.update_doc(doc) is False
    doc.write_text("no markers")
    with pytest.raises(ValueError, match="no generated reasons section"):
        reasons.update_doc(doc)
