"""Every command shown in README.md and docs/*.md still works, so none can drift from the code.

Each command of a ```bash block is matched by exactly one rule of `RULES`:

- ``run``: run for real, offline, in a temporary folder: paths under /tmp move there, the
  placeholders (DIR, BASE, A, B, runs/r1/best, merged) become tiny models and fresh folders,
  and a few get small sizes (``extra``);
- ``script``: the whole block runs as one shell script (the devnet dry run of
  docs/validator.md), and ``state`` commands then run on the state it leaves;
- ``help``: the command needs what a test may not touch (the real chain, the Hugging Face
  Hub, remote datasets, GPUs, hours): its program's ``--help`` must name every flag it uses;
- ``make``: the Makefile target must exist and its script's ``--help`` must work;
- ``skip``: not ours to run (installers, bittensor's CLI, this very suite).

A command that no rule matches fails `test_every_command_in_the_docs_has_one_rule`: a new
command in the docs needs a rule here, and a rule that matches nothing must go. The heavy
commands run once: the whole demo is `tests/test_demo.py`'s, the dry run is one test.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Rule:
    pattern: str  # a regular expression the whole command must match (spaces collapsed)
    kind: str  # run | script | state | help | make | skip
    why: str
    extra: str = ""  # appended to a `run` command: small sizes, no progress bars


NETWORK = "needs the real chain (finney) and a registered hotkey"
RULES = (
    # README.md
    Rule(r"make demo", "make", "the whole demo (minutes of training): tests/test_demo.py runs the same run_demo"),
    Rule(r"make demo-seeds", "make", "the seeds demo (minutes of training): tests/test_demo_seeds.py, -m slow"),
    Rule(r"make test", "skip", "this test suite itself"),
    Rule(r"pip install -e \.", "skip", "installs the package"),
    Rule(r"python neurons/validator\.py --wallet\.name vali --wallet\.hotkey default --netuid 37", "help", NETWORK),
    Rule(r"python scripts/start_validator\.py -- .*", "help",
         "a supervisor that pulls from git and keeps a validator on finney running"),
    Rule(r"python scripts/evaluate_model\.py --model DIR --competition INSTRUCT_8B", "help",
         "downloads INSTRUCT_8B's eval data (its --offline form in docs/miner.md runs)"),
    Rule(r"python neurons/miner\.py --model BASE --competition INSTRUCT_8B --out runs/x", "help",
         "trains on remote data for hours"),
    Rule(r"python scripts/merge_models\.py --method ties .*", "run", "merges tiny models on CPU in seconds"),
    Rule(r"python scripts/upload_model\.py --model DIR --repo you/model .*", "help",
         "pushes to the Hugging Face Hub and commits on finney"),
    Rule(r"\.venv/bin/python -m pytest tests/eval -q", "run", "the tests run in this suite: here they only collect",
         extra="--collect-only"),
    Rule(r"make benchmark", "make", "the quick benchmark (half an hour on two cores): tests/scripts/test_run_benchmarks.py"),
    Rule(r"python scripts/run_benchmarks\.py (--json|--device) .*", "help",
         "the full benchmark (half an hour on two cores) or a GPU run"),
    Rule(r"python scripts/run_benchmarks\.py --quick", "help",
         "times both engines for minutes; tests/scripts/test_run_benchmarks.py runs it on small workloads"),
    Rule(r"python scripts/make_tiny_model\.py --out /tmp/tiny --arch qwen2", "run", "builds a tiny model"),
    Rule(r"python scripts/devnet\.py init /tmp/devnet\.sqlite && python scripts/devnet\.py show /tmp/devnet\.sqlite",
         "run", "a devnet in a file"),
    # docs/competitions.md
    Rule(r"python -m competitions docs/competitions\.md", "run",
         "regenerates the tables: run on a copy, which must come out unchanged"),
    # docs/miner.md
    Rule(r"python neurons/miner\.py --model path/to/base .* --data databricks/databricks-dolly-15k .*", "help",
         "downloads Dolly and OASST1 and trains for up to a day"),
    Rule(r"torchrun --nproc-per-node 4 neurons/miner\.py .*", "help", "four GPUs"),
    Rule(r"python scripts/evaluate_model\.py --model runs/r1/best --competition INSTRUCT_8B --offline", "run",
         "scores a tiny model on the bundled data", extra="--eval-samples 2 --no-progress"),
    Rule(r"python scripts/upload_model\.py --model runs/r1/best --repo me/my-model .*", "help",
         "pushes to the Hugging Face Hub and commits on finney"),
    # docs/validator.md
    Rule(r"git clone .*", "skip", "clones this repository"),
    Rule(r"python -m venv \.venv && \. \.venv/bin/activate", "skip", "creates a virtual environment"),
    Rule(r"btcli .*", "skip", "bittensor's own CLI, on the real chain"),
    Rule(r"W=/tmp/dry && mkdir -p \$W", "script", "the devnet dry run: the whole block runs as one script"),
    Rule(r"jq .* ~/\.finetune/validator/state\.json", "state", "reads the dry run's state file"),
    Rule(r"python -m finetune\.validator status( --plain| --json \| jq .*)?", "state",
         "reads the dry run's state file"),
    Rule(r"python -m finetune\.validator reasons hash_mismatch", "run", "explains a code"),
)


# ---- the commands of the docs --------------------------------------------------------------------


def _commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and spacing dropped."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line)  # a `# comment` (no command of the docs quotes a '#')
        if line.strip():
            commands.append(" ".join(line.split()))
    return commands


@cache
def doc_blocks() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(file name, commands) for every ```bash block of the docs."""
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
            found.append((path.relative_to(ROOT).as_posix(), tuple(_commands(block))))
    return tuple(found)


def _rules_of(command: str) -> list[Rule]:
    return [rule for rule in RULES if re.fullmatch(rule.pattern, command)]


def _classified() -> dict[str, list[tuple[str, str, Rule]]]:
    """kind -> (doc, command, rule); the commands of a `script` block go with it."""
    out: dict[str, list[tuple[str, str, Rule]]] = {}
    for doc, commands in doc_blocks():
        first = _rules_of(commands[0])
        if first and first[0].kind == "script":
            out.setdefault("script", []).append((doc, "\n".join(commands), first[0]))
            continue
        for command in commands:
            rules = _rules_of(command)
            if len(rules) == 1:
                out.setdefault(rules[0].kind, []).append((doc, command, rules[0]))
    return out


def _ids(entries) -> list[str]:
    return [f"{doc}: {command.splitlines()[0][:60]}" for doc, command, _ in entries]


def test_every_command_in_the_docs_has_one_rule():
    problems, used = [], set()
    for doc, commands in doc_blocks():
        first = _rules_of(commands[0])
        if first and first[0].kind == "script":
            used.add(first[0].pattern)
            continue
        for command in commands:
            rules = _rules_of(command)
            used.update(rule.pattern for rule in rules)
            if len(rules) != 1:
                problems.append(f"{doc}: {command!r} matches {len(rules)} rules")
    assert not problems, "give each command one rule in tests/test_docs_commands.py:\n" + "\n".join(problems)
    stale = [rule.pattern for rule in RULES if rule.pattern not in used]
    assert not stale, f"rules that match no command of the docs any more: {stale}"
    assert all(rule.why for rule in RULES)


def test_commands_are_in_bash_blocks():
    # A command in an untyped block would escape every rule above.
    for path in DOCS:
        for lang, block in re.findall(r"^```(\w*)\n(.*?)^```", path.read_text(encoding="utf-8"), re.S | re.M):
            if lang != "bash":
                starts = [line for line in block.splitlines()
                          if re.match(r"(python|make|pip|git|btcli|jq|torchrun|\.venv/)\b", line)]
                assert not starts, f"{path.name}: a command outside a ```bash block: {starts}"


# ---- running them ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A folder for /tmp, a home of its own, and `python` on the PATH meaning this interpreter."""
    base = tmp_path_factory.mktemp("docs")
    bin_dir = base / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "python"  # a script, not a link: a link would lose the virtual environment
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(base / "home"),
           "PYTHONPATH": str(ROOT), "COLUMNS": "160"}
    # As an operator runs them: the tools switch the libraries' bars and notices off themselves.
    for name in ("FINETUNE_STATE_PATH", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY"):
        env.pop(name, None)
    return base, env


def _shell(script: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert run.returncode == 0, f"{script}\nexit {run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run


def _offline(command: str, base: Path, model: Path) -> str:
    """The command with its placeholders and /tmp paths pointed into `base`."""
    command = command.replace("/tmp/", f"{base}/tmp/").replace(".venv/bin/python", "python")
    command = re.sub(r"(--base|--model) (BASE|A|B|DIR|runs/r1/best)\b", rf"\1 {model}", command)
    command = re.sub(r"--out merged\b", f"--out {base}/merged-{abs(hash(command)) % 10**6}", command)
    return command.replace("python -m competitions docs/competitions.md",
                           f"python -m competitions {base}/competitions.md")


@pytest.mark.parametrize(("doc", "command", "rule"), _classified().get("run", []),
                         ids=_ids(_classified().get("run", [])))
def test_command_runs_offline(doc, command, rule, sandbox, tiny_model_dir):
    base, env = sandbox
    (base / "tmp").mkdir(exist_ok=True)
    if "competitions docs/competitions.md" in command:
        shutil.copy(ROOT / "docs" / "competitions.md", base / "competitions.md")
    _shell(f"{_offline(command, base, tiny_model_dir)} {rule.extra}", env)
    if "competitions docs/competitions.md" in command:
        assert (base / "competitions.md").read_text() == (ROOT / "docs" / "competitions.md").read_text()


def test_the_devnet_dry_run_and_the_commands_that_read_its_state(sandbox):
    # The heavy one, once: the dry run of docs/validator.md as one script, then the status
    # and jq commands on the state file it wrote.
    base, env = sandbox
    (base / "tmp").mkdir(exist_ok=True)
    ((_, script, _),) = _classified()["script"]
    run = _shell(script.replace("/tmp/", f"{base}/tmp/"), env)
    assert "round LOCAL_REASONING (id 102)" in run.stdout  # the round, as plain lines off a terminal
    validator_log = run.stderr.split("INFO pushed miner/tiny@", 1)[1].split("\n", 1)[1]  # after the upload
    assert "SYNTHETIC_1_SFT started, 4 requests" in validator_log  # the scoring worker's progress
    for noise in ("Loading weights", "FutureWarning", "[transformers]", "leaked semaphore", "Traceback"):
        assert noise not in validator_log, f"{noise!r} in the validator's log:\n{validator_log}"
    state = base / "tmp" / "dry" / "state.json"
    assert state.is_file()
    env = {**env, "FINETUNE_STATE_PATH": str(state)}
    for _, command, _ in _classified()["state"]:
        if "jq" in command.split() and shutil.which("jq") is None:
            continue  # jq is not part of this project; the status commands still run
        # The docs' examples look at INSTRUCT_8B (id 3); the dry run's competition is id 102.
        command = command.replace("~/.finetune/validator/state.json", str(state)).replace('["3"]', '["102"]')
        out = _shell(command, env).stdout
        assert out.strip() and out.strip() != "null", f"{command}\n{out}"


# ---- --help of the commands that cannot run here ----------------------------------------------------


@cache
def _help(program: str) -> str:
    args = program.split()
    run = subprocess.run([sys.executable, *args, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 0, f"{program} --help: exit {run.returncode}\n{run.stderr[-2000:]}"
    return run.stdout


def _programs(command: str) -> list[tuple[str, list[str]]]:
    """(program, the flags the command gives it): `python X.py`, `python -m M`, `torchrun ... X.py`;
    after a bare `--`, the flags are the validator's (start_validator.py passes them on)."""
    tokens = shlex.split(command.replace("[", " ").replace("]", " "))
    start = next(i for i, t in enumerate(tokens) if t.endswith(".py") or t == "-m")
    program = " ".join(tokens[start:start + 2]) if tokens[start] == "-m" else tokens[start]
    rest = tokens[start + (2 if tokens[start] == "-m" else 1):]
    passed = rest.index("--") if "--" in rest else len(rest)

    def flags(items: list[str]) -> list[str]:
        return [t.split("=", 1)[0] for t in items if t.startswith("--") and t not in ("--", "...")]

    found = [(program, flags(rest[:passed]))]
    if passed < len(rest):
        found.append(("neurons/validator.py", flags(rest[passed + 1:])))
    return found


@pytest.mark.parametrize(("doc", "command", "rule"), _classified().get("help", []),
                         ids=_ids(_classified().get("help", [])))
def test_command_that_needs_the_network_names_real_flags(doc, command, rule):
    for program, flags in _programs(command):
        text = _help(program)
        missing = [flag for flag in flags if not re.search(rf"{re.escape(flag)}(?![\w.-])", text)]
        assert not missing, f"{doc}: {command}\n{program} --help does not know {missing}"


def test_make_targets_run_what_the_docs_say():
    makefile = (ROOT / "Makefile").read_text()
    for _, command, _ in _classified().get("make", []):
        target = command.split()[1]
        recipe = re.search(rf"^{target}:.*\n\t(.+)$", makefile, re.M)
        assert recipe, f"no `{target}` target in the Makefile"
        script = re.search(r"(scripts/\S+\.py)", recipe.group(1))
        assert script, recipe.group(1)
        assert "usage:" in _help(script.group(1))


def test_the_validator_flags_table_is_its_help():
    # docs/validator.md: "The list below is `python neurons/validator.py --help`".
    text = (ROOT / "docs" / "validator.md").read_text(encoding="utf-8")
    table = text[text.index("| flag | default | meaning |"):text.index("The standard bittensor spellings")]
    documented = set(re.findall(r"^\| `(--[a-z0-9.-]+)`", table, re.M))
    aliases = {"--subtensor.network", "--subtensor.chain-endpoint", "--logging.debug", "--logging.trace",
               "--logging.info", "--help"}  # in the table of bittensor spellings below it
    shown = set(re.findall(r"^[ \t]+(--[a-z0-9][a-z0-9.-]*)", _help("neurons/validator.py"), re.M)) - aliases
    assert documented == shown, f"only in --help: {sorted(shown - documented)}; only in the docs: " \
                                f"{sorted(documented - shown)}"
