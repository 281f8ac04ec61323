"""docs/competitions.md must describe the definitions as they are in the code."""

import re
from pathlib import Path

import competitions as comps
from competitions.render import BEGIN_MARKER, END_MARKER, update_doc

DOC = Path(__file__).resolve().parents[2] / "docs" / "competitions.md"


def test_generated_tables_are_current():
    text = DOC.read_text(encoding="utf-8")
    assert comps.render_markdown() in text, (
        "docs/competitions.md is stale: run `python -m competitions docs/competitions.md`"
    )


def test_every_competition_has_a_written_section():
    text = DOC.read_text(encoding="utf-8")
    written = text.split(BEGIN_MARKER)[0]
    for c in comps.ALL_COMPETITIONS:
        assert re.search(rf"^### .*\b{c.name} \(id {c.id}\)", written, re.M), c.name


def test_tables_name_every_task_weight_and_start_block():
    text = DOC.read_text(encoding="utf-8")
    for c in comps.ALL_COMPETITIONS:
        for t in c.tasks:
            assert re.search(
                rf"\| {t.name} \| {t.method.value} \| `{t.dataset}` \| {t.weight:g} \|", text
            )
    for entry in comps.SCHEDULE.entries:
        assert f"| {entry.start_block:,} |" in text
    # The prose quotes the schedule blocks too.
    for block in (
        comps.INSTRUCT_ONLY_BLOCK,
        comps.REASONING_BLOCK,
    ):
        assert f"{block:,}" in text.split(BEGIN_MARKER)[0]


def test_update_doc_rewrites_only_the_generated_part(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{BEGIN_MARKER}\nold\n{END_MARKER}\noutro\n", encoding="utf-8")
    assert update_doc(doc) is True
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "old" not in text
    assert update_doc(doc) is False
