"""Markdown tables of the competitions and schedules, generated from the definitions.

docs/competitions.md holds this output between two markers, and a test checks it is current.
Regenerate it with `python -m competitions docs/competitions.md`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from competitions.schedule import ALL_COMPETITIONS, SCHEDULES
from finetune.competition import Competition, EvalTaskSpec, NormKind, Schedule, SubmissionRules

BEGIN_MARKER = "<!-- BEGIN GENERATED: python -m competitions docs/competitions.md -->"
END_MARKER = "<!-- END GENERATED -->"


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2)):
        if n % size == 0:
            return f"{n // size} {unit}"
    return f"{n:,} bytes"


def _params(c: Competition) -> str:
    k = c.constraints
    if k.min_params:
        return f"{k.min_params:,} – {k.max_params:,}"
    return f"≤ {k.max_params:,}"


def _constraints_rows(c: Competition) -> list[tuple[str, str]]:
    k = c.constraints
    e = k.epsilon
    norms = "none"
    if k.norm_limits is not None:
        n = k.norm_limits
        norms = (
            f"hard {n.hard_limit:g}, soft {n.soft_limit:g}, "
            f"mean fraction over soft ≤ {n.max_mean_fraction_over_soft:g}"
        )
    rows = [
        ("parameters", _params(c)),
        ("max repo bytes", _bytes(k.max_bytes)),
        ("sequence length", f"{k.sequence_length:,}"),
        ("tokenizer", f"`{k.tokenizer}`" if k.tokenizer else "the model's own"),
        ("architectures", ", ".join(f"`{a}`" for a in k.allowed_architectures)),
        ("load dtype", k.load_dtype),
        ("eval block delay", f"{k.eval_block_delay:,}"),
        ("epsilon", f"{e.start:g} → {e.end:g} over {e.decay_blocks:,} blocks"),
        ("weight norms", norms),
        ("aggregation", c.aggregation.value),
    ]
    if k.approved_families:
        rows.append(("approved base families", ", ".join(k.approved_families)))
    if k.submission is not None:
        rows += _submission_rows(k.submission)
    return rows


def _submission_rows(rules: SubmissionRules) -> list[tuple[str, str]]:
    budget = f"{rules.max_hours:g} h"
    if rules.max_memory_bytes is not None:
        budget += f", peak memory ≤ {_bytes(rules.max_memory_bytes)}"
    rows = [("submission manifest", f"`submission.json`, kind `{rules.kind}`"), ("declared budget", budget)]
    if rules.open_data:
        rows.append(("training data", "Hub dataset ids, or " + ", ".join(f"`{d}`" for d in rules.open_data)))
    if rules.licenses:
        rows.append(("licences", ", ".join(rules.licenses)))
    if rules.experts is not None:
        listed = [f"`{e.repo}`" + (f"@{e.revision[:8]}" if e.revision else "") + f" ({e.license}"
                  + (f", {e.skill})" if e.skill else ")") for e in rules.experts.entries()]
        rows.append(("experts (base first)" if rules.experts.base else "experts", "; ".join(listed)))
    return rows


def _task_row(t: EvalTaskSpec) -> str:
    norm = "none"
    if t.normalization.kind is NormKind.INVERSE_EXPONENTIAL:
        norm = f"inverse exponential, ceiling {t.normalization.ceiling:g}"
    samples = f"{t.samples}" + (f" (min {t.min_samples})" if t.min_samples > 1 else "")
    gen = "—"
    if t.generation is not None:
        g = t.generation
        gen = f"{g.max_new_tokens} tokens, rep. {g.repetition_penalty:g}"
    return (
        f"| {t.name} | {t.method.value} | `{t.dataset}` | {t.weight:g} | {norm} "
        f"| {samples} | {gen} | {t.version} |"
    )


def _label(c: Competition) -> str:
    periods = [d for d in ALL_COMPETITIONS if d.name == c.name]
    label = f"{c.name} (id {c.id})"
    if len(periods) > 1:
        label += f", period {periods.index(c) + 1}"
    return label


def render_competition(c: Competition) -> str:
    """Constraints and tasks tables of one competition definition."""
    lines = [f"#### {_label(c)}", "", "| constraint | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in _constraints_rows(c)]
    lines += [
        "",
        "| task | method | dataset | weight | normalisation | samples | generation | version |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [_task_row(t) for t in c.tasks]
    return "\n".join(lines)


def render_schedule(name: str, schedule: Schedule) -> str:
    """One row per schedule entry: start block and competitions with their reward shares."""
    lines = [f"#### {name}", "", "| start block | competitions (reward share) |", "|---|---|"]
    for entry in schedule.entries:
        shares = ", ".join(
            f"{_label(s.competition)}: {s.reward_share:.0%}" for s in entry.competitions
        )
        lines.append(f"| {entry.start_block:,} | {shares} |")
    return "\n".join(lines)


def render_markdown() -> str:
    """The generated part of docs/competitions.md: schedules, then every definition."""
    parts = [
        BEGIN_MARKER,
        "",
        "### Schedules",
        "",
    ]
    for name, schedule in SCHEDULES.items():
        protocols = ", ".join(dict.fromkeys(f"`{e.protocol.name}`" for e in schedule.entries))
        parts += [render_schedule(name, schedule), "", f"Protocol: {protocols}.", ""]
    parts += [
        "### Definitions",
        "",
    ]
    for c in ALL_COMPETITIONS:
        parts += [render_competition(c), ""]
    parts.append(END_MARKER)
    return "\n".join(parts)


def update_doc(path: Path) -> bool:
    """Replace the generated part of the doc at `path`; True when the file changed.

    Raises:
        ValueError: the doc lacks the two markers.
    """
    text = path.read_text(encoding="utf-8")
    start, end = text.find(BEGIN_MARKER), text.find(END_MARKER)
    if start < 0 or end < start:
        raise ValueError(f"{path} lacks the markers {BEGIN_MARKER!r} ... {END_MARKER!r}")
    new = text[:start] + render_markdown() + text[end + len(END_MARKER) :]
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def main(argv: list[str] | None = None) -> int:
    """`python -m competitions [DOC]`: regenerate the tables of DOC (docs/competitions.md)."""
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0] if args else "docs/competitions.md")
    print(f"{target}: {'updated' if update_doc(target) else 'already current'}")
    return 0
