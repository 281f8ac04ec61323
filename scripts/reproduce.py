#!/usr/bin/env python3
"""1 GPU / 1 day recipes: train one and declare it, or reproduce a submission as the organisers did.

    # a miner: train the recipe in SETTINGS from a base, writing OUT/best/submission.json
    scripts/reproduce.py train --settings recipe.json --base bases/tiny-llama-base@REV \\
        --hub dir:out/hub --competition LOCAL_EFFICIENT --out out/recipe

    # the organisers: re-run a submission's recipe under the same budget and compare the scores
    scripts/reproduce.py check miner-a/tiny-recipe@REV --hub dir:out/hub --competition LOCAL_EFFICIENT --json -

A model is a local folder or REPO@REVISION in `--hub`. The re-run starts from the declared base
(downloaded from `--hub` at the declared revision, or `--base-dir`), trains the declared
settings with the miner's trainer, and both models are scored with the validator's code on the
same seeded data; each task's raw score must agree within `--atol + --rtol * |reproduced|`.

Exit codes (check): 0 reproduced; 1 not reproduced (a task out of tolerance, or the re-run over
budget); 2 anything else went wrong (one line on stderr says what).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
for _name, _value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled",
                      "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_name, _value)

import competitions  # noqa: E402
from finetune.errors import ConfigError, FinetuneError  # noqa: E402
from finetune.text import printable  # noqa: E402
from finetune.validator.cli import FlagParser  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    parser = FlagParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    common = FlagParser(add_help=False)
    common.add_argument("--hub", default=None, metavar="SPEC", help="model store of REPO@REVISION models: dir:PATH or hf")
    common.add_argument("--competition", default="EFFICIENT_1GPU_1DAY", metavar="NAME",
                        help="the recipe competition (its budget, tasks and scoring)")
    common.add_argument("--device", default="cpu", metavar="DEVICE", help="cpu, cuda or cuda:N")
    train = commands.add_parser("train", parents=[common], help="train a recipe and write its submission.json")
    train.add_argument("--settings", type=Path, required=True, metavar="FILE", help="the recipe's settings (JSON)")
    train.add_argument("--base", required=True, metavar="REPO@REVISION", help="the declared base model")
    train.add_argument("--base-dir", type=Path, metavar="DIR", help="its files, instead of downloading from --hub")
    train.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (the model is OUT/best)")
    check = commands.add_parser("check", parents=[common], help="reproduce a submission and compare")
    check.add_argument("model", metavar="MODEL", help="the submission: a folder, or REPO@REVISION in --hub")
    check.add_argument("--base-dir", type=Path, metavar="DIR", help="the declared base's files (default: from --hub)")
    check.add_argument("--work", type=Path, metavar="DIR", help="where the re-run trains (default: a temporary folder)")
    check.add_argument("--atol", type=float, default=0.02, metavar="X", help="absolute tolerance per task raw score")
    check.add_argument("--rtol", type=float, default=0.02, metavar="X", help="relative tolerance per task raw score")
    check.add_argument("--seed", type=int, default=12345, metavar="N", help="seed of the comparison's eval data")
    check.add_argument("--json", metavar="FILE", help="write the verdict as JSON to FILE (- for stdout)")
    return parser


def _split(ref: str) -> tuple[str, str]:
    repo, sep, revision = ref.rpartition("@")
    if not sep or not repo:
        raise ConfigError(f"{printable(ref, 80)!r} is not REPO@REVISION")
    return repo, revision


def _local(ref: str, hub: str | None, dest: Path) -> Path:
    """A model folder: `ref` itself, or REPO@REVISION downloaded from the hub into `dest`."""
    if Path(ref).is_dir():
        return Path(ref)
    if hub is None:
        raise ConfigError(f"{printable(ref, 80)!r} is no folder, and no --hub was given to download it from")
    from finetune.storage import open_store

    repo, revision = _split(ref)
    return open_store(hub).download(repo, revision, dest)


def _with_manifest(ref: str, hub: str | None, dest: Path) -> Path:
    """A submission folder with its submission.json (read from the hub beside the download)."""
    folder = _local(ref, hub, dest)
    if folder == dest:  # downloaded: the manifest is read by itself, size-capped
        from finetune.storage import open_store
        from finetune.storage.files import MANIFEST_FILE, MAX_MANIFEST_BYTES

        repo, revision = _split(ref)
        raw = open_store(hub).read_file(repo, revision, MANIFEST_FILE, max_bytes=MAX_MANIFEST_BYTES)
        if raw is not None:
            (folder / MANIFEST_FILE).write_bytes(raw)
    return folder


def _train(args, competition) -> int:
    from finetune.mining.recipe import read_settings, run_recipe

    settings = read_settings(args.settings)
    repo, revision = _split(args.base)
    with tempfile.TemporaryDirectory() as tmp:
        base = args.base_dir or _local(args.base, args.hub, Path(tmp) / "base")
        run = run_recipe(base, competition, settings, args.out, base_repo=repo, base_revision=revision,
                         device=args.device)
    print(f"trained in {run.seconds:.1f}s -> {run.model_dir} (with submission.json; upload that folder)")
    return 0


def _check(args, competition) -> int:
    from finetune.mining.recipe import Tolerance, dump, read_recipe_manifest, reproduce

    with tempfile.TemporaryDirectory() as tmp:
        submitted = _with_manifest(args.model, args.hub, Path(tmp) / "submitted")
        manifest = read_recipe_manifest(submitted)
        base_ref = f"{manifest.base.repo}@{manifest.base.revision}"
        base = args.base_dir or _local(base_ref, args.hub, Path(tmp) / "base")
        result = reproduce(submitted, base, competition, args.work or Path(tmp) / "rerun", eval_seed=args.seed,
                           tolerance=Tolerance(atol=args.atol, rtol=args.rtol),
                           protocol=competitions.protocol_for(competition), device=args.device)
    for name, task in result.tasks.items():
        print(f"{name}: submitted {task['submitted']:.4f} reproduced {task['reproduced']:.4f} "
              f"difference {task['difference']:.4f} {'ok' if task['match'] else 'OUT OF TOLERANCE'}")
    print(f"re-run {result.seconds:.1f}s; {'REPRODUCED' if result.reproduced else 'NOT REPRODUCED'}"
          + "".join(f"\n  {printable(r, 200)}" for r in result.reasons))
    if args.json == "-":
        print(dump(result))
    elif args.json:
        Path(args.json).write_text(dump(result) + "\n")
    return 0 if result.reproduced else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from finetune.eval.loading import quiet_library_output

    quiet_library_output()
    try:
        competition = competitions.get_competition(args.competition)
        return _train(args, competition) if args.command == "train" else _check(args, competition)
    except (FinetuneError, OSError) as error:
        print(f"error: {printable(error, 300)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
