#!/usr/bin/env python3
"""Merge same-architecture models (linear, task_arithmetic, ties, dare, slerp) into one.

Example:
    scripts/merge_models.py --method ties --base BASE --model A --model B \\
        --weight 1 --weight 0.5 --density 0.5 --out merged

A merging-competition entry: merge a published expert list (a competition's name, or a FILE
in its JSON form), downloaded from --hub at the list's revisions, optionally re-calibrated on a
data set with the miner's trainer; OUT then holds submission.json (method, experts, merge
seconds, peak memory), ready for scripts/upload_model.py:
    scripts/merge_models.py --method ties --experts experts.json --hub dir:out/hub \\
        --recalibrate boolq --competition LOCAL_MERGING --out merged
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune.errors import FinetuneError  # noqa: E402
from finetune.mining.merge import OUTPUT_DTYPES, known_methods, merge_models  # noqa: E402
from finetune.validator.cli import FlagParser  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    parser = FlagParser(description=__doc__)
    parser.add_argument(
        "--method", required=True, metavar="NAME", help=f"merge method: {', '.join(known_methods())}"
    )
    parser.add_argument(
        "--base", type=Path, metavar="DIR", help="base model directory (needed by task_arithmetic, ties, dare)"
    )
    parser.add_argument(
        "--model", type=Path, action="append", metavar="DIR", help="model directory; repeat (or --experts)"
    )
    parser.add_argument(
        "--experts", metavar="NAME|FILE",
        help="merge a published expert list: a competition's name, or a JSON file of one; writes submission.json",
    )
    parser.add_argument("--hub", default="hf", metavar="SPEC", help="where --experts are downloaded from: hf or dir:PATH")
    parser.add_argument(
        "--pin", action="append", default=[], metavar="REPO@REV", help="revision of a listed expert the list leaves open"
    )
    parser.add_argument("--recalibrate", metavar="DATASET",
                        help="with --experts: train the merge briefly on this task loader or Hub dataset")
    parser.add_argument("--recalibrate-steps", type=int, default=20, metavar="N", help="re-calibration optimiser steps")
    parser.add_argument("--competition", metavar="NAME",
                        help="whose scoring the re-calibration keeps its best weights by (default: the list's)")
    parser.add_argument(
        "--weight", type=float, action="append", metavar="W", help="one weight per --model, in order"
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory (must be empty)")
    parser.add_argument(
        "--density", type=float, default=0.5, metavar="X", help="fraction kept by ties/dare, in (0, 1]"
    )
    parser.add_argument("--lambda", dest="lam", type=float, default=1.0, metavar="X", help="task-vector scale")
    parser.add_argument(
        "--t", dest="slerp_t", type=float, default=0.5, metavar="X", help="slerp position in [0, 1]"
    )
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="dare drop-mask seed")
    parser.add_argument(
        "--dtype", default="float32", choices=sorted(OUTPUT_DTYPES), help="output dtype"
    )
    parser.add_argument(
        "--tokenizer-from", type=Path, metavar="DIR", help="copy the tokenizer from this directory"
    )
    parser.add_argument(
        "--max-shard-gb", type=float, default=2.0, metavar="GB", help="output shard size limit, GiB"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace weights in a non-empty --out"
    )
    return parser


def _expert_list(spec: str):
    """A competition's published list, or a FILE holding one (size-capped, validated)."""
    import competitions
    from finetune.competition import ExpertList
    from finetune.errors import ConfigError

    path = Path(spec)
    if path.is_file():
        if path.stat().st_size > 1024 * 1024:
            raise ConfigError(f"{path}: an expert list is at most 1 MiB")
        try:
            return ExpertList.model_validate_json(path.read_bytes())
        except ValueError as error:
            raise ConfigError(f"{path}: not an expert list: {error}") from None
    rules = competitions.get_competition(spec).constraints.submission
    if rules is None or rules.experts is None:
        raise ConfigError(f"{spec} publishes no expert list")
    return rules.experts


def _merge_experts(args) -> int:
    import tempfile

    import competitions
    from finetune.errors import ConfigError
    from finetune.mining.merge_submission import build_merge_submission, fetch_listed
    from finetune.storage import open_store

    if args.model or args.base:
        raise ConfigError("--experts takes the models from the list: no --model or --base")
    listed = _expert_list(args.experts)
    pins = {}
    for pin in args.pin:
        repo, sep, revision = pin.rpartition("@")
        if not sep:
            raise ConfigError(f"--pin {pin!r} is not REPO@REVISION")
        pins[repo] = revision
    name = args.competition or listed.competition
    competition = competitions.get_competition(name) if (args.recalibrate or args.competition) else None
    with tempfile.TemporaryDirectory() as tmp:
        base, experts = fetch_listed(listed, open_store(args.hub), Path(tmp), pins)
        manifest, report = build_merge_submission(
            method=args.method, base=base, experts=experts, out_dir=args.out, competition=competition,
            recalibrate=args.recalibrate, recalibrate_steps=args.recalibrate_steps, seed=args.seed,
            weights=args.weight, density=args.density, lam=args.lam, slerp_t=args.slerp_t, dtype=args.dtype,
            max_shard_bytes=int(args.max_shard_gb * 1024**3), overwrite=args.overwrite,
        )
    recal = f", re-calibrated on {manifest.recalibration.dataset} in {manifest.recalibration.seconds:.1f}s" \
        if manifest.recalibration else ""
    print(f"{report.method}: {len(experts)} experts merged in {manifest.merge_seconds:.1f}s, peak memory "
          f"{manifest.peak_memory_bytes / 2**20:.0f} MiB{recal} -> {args.out} (with submission.json)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.model and not args.experts:
        parser.error("--model DIR (repeat) or --experts NAME|FILE is required")
    if args.experts:
        try:
            return _merge_experts(args)
        except (FinetuneError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    try:
        report = merge_models(
            method=args.method,
            base=args.base,
            models=args.model,
            weights=args.weight,
            out_dir=args.out,
            density=args.density,
            lam=args.lam,
            slerp_t=args.slerp_t,
            seed=args.seed,
            dtype=args.dtype,
            tokenizer_from=args.tokenizer_from,
            max_shard_bytes=int(args.max_shard_gb * 1024**3),
            overwrite=args.overwrite,
        )
    except FinetuneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"{report.method}: {report.tensors_merged} tensors merged, {report.output_bytes / 1e6:.1f} MB "
        f"in {len(report.output_files)} file(s), {report.elapsed_s:.1f}s -> {report.out_dir}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
