"""The validator's command line, generated from `ValidatorSettings` (the single source).

Each leaf field becomes one flag: `batch_tokens` is `--batch-tokens`, a nested field is dotted
(`--wallet.name`, `--intervals.weights-s`), a bool is a switch (its hidden `--no-` form undoes
a `FINETUNE_*` variable). The flags given are overlaid on the `FINETUNE_*` environment by
pydantic-settings, which checks every value at once. A bad command line never gets further than this module: each problem is one
line (`error: --batch-tokens: must be at least 1 (got -1)`) and the exit code is 2.

The standard bittensor spellings that operators' pm2 configs use are accepted as aliases
(`--subtensor.network`, `--logging.debug`, ...), and `_` may stand for `-` in any flag name.

`FlagParser` and `HelpFormatter` are also used by the scripts under `scripts/`.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

if typing.TYPE_CHECKING:
    from pydantic.fields import FieldInfo

    from finetune.validator.settings import ValidatorSettings


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks; appends ``(default: X)`` to every flag that has a
    real default (not None, not an off switch, not already written in its help text)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or default is None or default is False or default is argparse.SUPPRESS
                or "default" in text or isinstance(action, argparse._HelpAction)):
            return text
        return f"{text} (default: %(default)s)"


class FlagParser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` that answers a bad command line with one line and exit 2.

    No abbreviations (`--batch-token` is not `--batch-tokens`), an unknown flag names the
    nearest known one, and with ``underscores=True`` a `_` in a flag name reads as `-`.
    """

    def __init__(self, *args: Any, underscores: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.underscores = underscores

    def error(self, message: str) -> NoReturn:
        # argparse says "argument --x: expected one argument"; the flag first reads better.
        message = re.sub(r"^argument ([^ :]+)[^:]*: ", r"\1: ", message)
        self.exit(2, f"error: {message}\n")

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:
        argv = list(sys.argv[1:] if args is None else args)
        spelled = {self._normal(a): a for a in argv}
        parsed, extra = self.parse_known_args([self._normal(a) for a in argv], namespace)
        if extra:
            self.error(self._unknown(extra, spelled))
        return parsed

    def _normal(self, arg: str) -> str:
        if not self.underscores or not arg.startswith("--"):
            return arg
        name, eq, value = arg.partition("=")
        return name.replace("_", "-") + eq + value

    def _unknown(self, extra: list[str], spelled: dict[str, str]) -> str:
        flag = next((a for a in extra if a.startswith("-") and not _is_number(a)), None)
        if flag is None:
            return f"unexpected argument {extra[0]!r} (--help lists the flags)"
        name = spelled.get(flag, flag).partition("=")[0]
        flags = [o for o in self._flags() if o.startswith("--")]
        close = difflib.get_close_matches(self._normal(name), flags, n=1, cutoff=0.6)
        if close:
            return f"unknown flag {name}; did you mean {close[0]}?"
        return f"unknown flag {name} (--help lists the flags)"

    def _flags(self) -> Iterator[str]:
        """Every option string, those of the sub-commands included."""
        for action in self._actions:
            yield from action.option_strings
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from sub._flags() if isinstance(sub, FlagParser) else ()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Alias:
    """Another spelling of a settings field, e.g. bittensor's ``--subtensor.network``.

    Attributes:
        flag: the flag as operators write it.
        field: the dotted settings field it sets (``chain``, ``log_level``).
        help: its help line; None hides it from ``--help``.
        const: for a switch, the value it sets; None: the flag takes a value.
        rank: when several aliases of one field are given, the highest rank wins.
        prefixes: if set, the value must start with one of these.
    """

    flag: str
    field: str
    help: str | None
    const: str | None = None
    rank: int = 0
    prefixes: tuple[str, ...] = ()


VALIDATOR_ALIASES = (
    Alias("--subtensor.network", "chain", "bittensor's name for --chain: finney, test, local or a ws:// url"),
    Alias("--subtensor.chain-endpoint", "chain", "bittensor's endpoint flag: --chain with a ws:// or wss:// url "
          "(wins over --subtensor.network)", rank=1, prefixes=("ws://", "wss://")),
    Alias("--logging.debug", "log_level", "same as --log-level debug", const="DEBUG", rank=1),
    Alias("--logging.trace", "log_level", "same as --log-level debug, the most detailed level here",
          const="DEBUG", rank=2),
    Alias("--logging.info", "log_level", "same as --log-level info", const="INFO"),
    Alias("--max-samples", "eval_samples", None),
    Alias("--samples", "eval_samples", None),
)

VALIDATOR_EPILOG = """\
chain forms (--chain, --weights-chain, --subtensor.network):
  finney           the Bittensor main network
  test             the Bittensor test network
  local            a subtensor node on this machine
  ws://HOST:PORT   any subtensor node; wss://HOST:PORT over TLS
  devnet:PATH      a local SQLite devnet (python scripts/devnet.py init PATH)

hub forms (--hub): hf (the Hugging Face Hub) or dir:PATH (a folder store, for devnets).

--offline is a dry run on the bundled eval data that sets no weights (on a devnet it needs
no wallet). --dont-set-weights scores live models on live data and sets no weights.

Every flag can also come from the environment: FINETUNE_ and the flag in capitals, with _ for
- and __ for a dot (FINETUNE_WALLET__NAME=vali, FINETUNE_INTERVALS__WEIGHTS_S=3600). Flags win.
A bad value stops the validator at start-up: one line per problem, exit code 2.
"""


def _leaves(model: type, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], FieldInfo]]:
    from pydantic import BaseModel

    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            yield from _leaves(info.annotation, (*prefix, name))
        else:
            yield (*prefix, name), info


def flag_of(path: Sequence[str]) -> str:
    """``("intervals", "weights_s")`` -> ``--intervals.weights-s``."""
    return "--" + ".".join(part.replace("_", "-") for part in path)


def _extra(info: FieldInfo, key: str) -> Any:
    return info.json_schema_extra.get(key) if isinstance(info.json_schema_extra, dict) else None


def _metavar(info: FieldInfo) -> str:
    if _extra(info, "metavar"):
        return _extra(info, "metavar")
    if typing.get_origin(info.annotation) is typing.Literal:
        return "{" + ",".join(typing.get_args(info.annotation)) + "}"
    args = [a for a in typing.get_args(info.annotation) if a is not type(None)] or [info.annotation]
    return {int: "N", float: "X", Path: "PATH"}.get(args[0], "TEXT")


def _shown(value: Any) -> str:
    if isinstance(value, Path):
        home = str(Path.home())
        text = str(value)
        return "~" + text[len(home):] if text.startswith(home + "/") else text
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _help(info: FieldInfo) -> str:
    text = info.description or ""
    if info.default is False:
        text += " (default: off)"
    elif info.default is not None and "default" not in text:
        text += f" (default: {_shown(info.default)})"
    return text.replace("%", "%%")


def settings_parser(model: type, *, prog: str, description: str, epilog: str = "",
                    aliases: Sequence[Alias] = ()) -> FlagParser:
    """An argparse parser with one flag per leaf field of `model`, grouped by sub-model.

    Values stay strings (pydantic converts and checks them); a flag not given is absent from
    the namespace. The destination of a field is ``f:<dotted path>``, of an alias ``a:<flag>``.
    """
    parser = FlagParser(prog=prog, description=description, epilog=epilog, usage="%(prog)s [FLAGS]",
                        underscores=True, argument_default=argparse.SUPPRESS)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for path, info in _leaves(model):
        if len(path) == 1:
            group = parser
        else:
            if path[0] not in groups:
                title = model.model_fields[path[0]].description or path[0]
                groups[path[0]] = parser.add_argument_group(f"--{path[0]}.*: {title}")
            group = groups[path[0]]
        dest = "f:" + ".".join(path)
        if info.annotation is bool:  # a switch; its hidden --no- form undoes a FINETUNE_* variable
            group.add_argument(flag_of(path), dest=dest, action="store_const", const="true", help=_help(info))
            group.add_argument("--no-" + flag_of(path)[2:], dest=dest, action="store_const", const="false",
                               help=argparse.SUPPRESS)
        else:
            group.add_argument(flag_of(path), dest=dest, metavar=_metavar(info), help=_help(info))
    if aliases:
        group = parser.add_argument_group("bittensor spellings, accepted as aliases")
        for alias in aliases:
            options: dict[str, Any] = {"dest": "a:" + alias.flag,
                                       "help": alias.help if alias.help else argparse.SUPPRESS}
            if alias.const is None:
                options["metavar"] = "VALUE"
            else:
                options.update(action="store_const", const=alias.const)
            group.add_argument(alias.flag, **options)
    return parser


def _resolve(values: dict[str, str], aliases: Sequence[Alias]) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """Field path -> (value, the flag that gave it); conflicting or malformed aliases as problems."""
    chosen = {key[2:]: (value, flag_of(key[2:].split("."))) for key, value in values.items() if key.startswith("f:")}
    problems: list[str] = []
    given = [a for a in aliases if "a:" + a.flag in values]
    for alias in sorted(given, key=lambda a: -a.rank):
        value = values["a:" + alias.flag]
        if alias.prefixes and not value.startswith(alias.prefixes):
            problems.append(f"error: {alias.flag}: must start with {' or '.join(alias.prefixes)} (got {value})")
            continue
        if alias.field not in chosen:
            chosen[alias.field] = (value, alias.flag)
            continue
        held, by = chosen[alias.field]
        outranked = any(a.flag == by and a.rank > alias.rank for a in given)
        if held != value and not outranked:
            problems.append(f"error: {alias.flag}: conflicts with {by} {held}; give one of them")
    return chosen, problems


_MESSAGES = {
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_parsing": "must be true or false",
    "path_type": "must be a path",
}


def describe(error: dict) -> str:
    """A pydantic error as a short rule: ``must be at least 1``."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "greater_than_equal":
        return f"must be at least {_shown(ctx['ge'])}"
    if kind == "greater_than":
        return f"must be greater than {_shown(ctx['gt'])}"
    if kind == "literal_error":
        return "must be one of " + ctx["expected"].replace("'", "").replace(" or ", ", ")
    if kind == "value_error":
        return error["msg"].removeprefix("Value error, ")
    return _MESSAGES.get(kind, error["msg"][:1].lower() + error["msg"][1:])


def _got(value: Any) -> str:
    text = str(value)
    return repr(text) if not text.strip() or text != text.strip() else text[:200]


def problem_lines(exc: Exception, sources: dict[str, str], env_prefix: str) -> list[str]:
    """One ``error: WHERE: RULE (got VALUE)`` line per problem; WHERE is the flag the value came
    from, or its environment variable."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):  # pydantic-settings: a nested field's env value is no JSON
        field = re.search(r'field "(\w+)"', str(exc))
        if field is None:
            return [f"error: {exc}"]
        name = env_prefix + field.group(1).upper()
        return [f"error: {name}: must be a JSON object (or set {name}__<FIELD> for one field)"]
    lines = []
    for error in exc.errors(include_url=False):
        path = [str(part) for part in error["loc"] if not isinstance(part, int)]
        where = sources.get(".".join(path)) or env_prefix + "__".join(path).upper()
        lines.append(f"error: {where}: {describe(error)} (got {_got(error.get('input'))})")
    return lines


def settings_from_flags(model: type, parser: FlagParser, argv: Sequence[str], *,
                        aliases: Sequence[Alias] = ()) -> Any:
    """Parse `argv` with `parser` and build `model` from it, overlaid on the environment.

    Raises:
        SystemExit: after printing the help (code 0), or one line per problem to stderr (2).
    """
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    values = vars(parser.parse_args(argv))
    chosen, problems = _resolve(values, aliases)
    nested: dict[str, Any] = {}
    for field, (value, _flag) in chosen.items():
        *parents, leaf = field.split(".")
        target = nested
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    settings = None
    try:
        settings = model(**nested)
    except (ValidationError, SettingsError) as exc:
        sources = {field: flag for field, (_value, flag) in chosen.items()}
        problems += problem_lines(exc, sources, model.model_config.get("env_prefix", ""))
    if problems:
        print("\n".join(problems), file=sys.stderr)
        raise SystemExit(2)
    return settings


def validator_parser() -> FlagParser:
    """The parser of ``neurons/validator.py``."""
    from finetune.validator.settings import ValidatorSettings

    return settings_parser(
        ValidatorSettings, prog="neurons/validator.py", epilog=VALIDATOR_EPILOG, aliases=VALIDATOR_ALIASES,
        description="The subnet 37 validator: check and score miners' models, set weights on chain "
        "(docs/validator.md).")


def parse_validator_settings(argv: Sequence[str]) -> ValidatorSettings:
    """`ValidatorSettings` from the flags `argv` and the ``FINETUNE_*`` environment.

    Raises:
        SystemExit: ``--help`` (code 0), or a bad setting: one line per problem on stderr (2).
    """
    from finetune.validator.settings import ValidatorSettings

    return settings_from_flags(ValidatorSettings, validator_parser(), argv, aliases=VALIDATOR_ALIASES)


__all__ = ["Alias", "FlagParser", "HelpFormatter", "VALIDATOR_ALIASES", "flag_of", "parse_validator_settings",
           "problem_lines", "settings_from_flags", "settings_parser", "validator_parser"]
