#!/usr/bin/env python3
"""Run a local devnet chain in a SQLite file: create it, register neurons, advance, show.

Point the validator, the miner and the upload script at it with --chain devnet:PATH.

    python scripts/devnet.py init /tmp/devnet.db --block-time 2 --netuid 1
    python scripts/devnet.py register /tmp/devnet.db --generate vali --wallet.path /tmp/w --validator --stake 1000
    python scripts/devnet.py register /tmp/devnet.db --hotkey 5F...
    python scripts/devnet.py advance /tmp/devnet.db 100
    python scripts/devnet.py show /tmp/devnet.db
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from rich.text import Text  # noqa: E402

from finetune.chain import DevnetChain  # noqa: E402
from finetune.chain.devnet import (  # noqa: E402
    DEFAULT_COMMIT_RATE_LIMIT,
    DEFAULT_WEIGHTS_RATE_LIMIT,
)
from finetune.chain.wallets import DEFAULT_WALLET_PATH, create_dev_wallet, load_wallet  # noqa: E402
from finetune.errors import FinetuneError  # noqa: E402
from finetune.text import printable  # noqa: E402
from finetune.validator.cli import FlagParser  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    parser = FlagParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=FlagParser)

    init = sub.add_parser("init", help="create a devnet file", description="Create a devnet file.")
    init.add_argument("path", type=Path, help="the devnet file to create (it must not exist)")
    init.add_argument("--block-time", type=float, default=12.0, metavar="SECONDS",
                      help="seconds per block; blocks advance with wall-clock time")
    init.add_argument("--netuid", type=int, default=1, metavar="N", help="the subnet uid")
    init.add_argument(
        "--commit-rate-limit",
        type=int,
        default=DEFAULT_COMMIT_RATE_LIMIT,
        metavar="BLOCKS",
        help="blocks between two commitments of one hotkey",
    )
    init.add_argument(
        "--weights-rate-limit",
        type=int,
        default=DEFAULT_WEIGHTS_RATE_LIMIT,
        metavar="BLOCKS",
        help="blocks between two weight settings of one validator",
    )

    reg = sub.add_parser("register", help="register a hotkey", description="Register a hotkey on the devnet.")
    reg.add_argument("path", type=Path, help="the devnet file")
    who = reg.add_mutually_exclusive_group(required=True)
    who.add_argument("--hotkey", metavar="SS58", help="hotkey ss58 address")
    who.add_argument("--wallet.name", dest="wallet_name", metavar="NAME", help="existing wallet name")
    who.add_argument(
        "--generate", metavar="NAME", help="create an UNENCRYPTED wallet NAME and register it"
    )
    reg.add_argument("--wallet.hotkey", dest="wallet_hotkey", default="default", metavar="NAME",
                     help="hotkey name inside the wallet")
    reg.add_argument("--wallet.path", dest="wallet_path", default=DEFAULT_WALLET_PATH, metavar="PATH",
                     help="folder holding the wallets")
    reg.add_argument("--stake", type=float, default=0.0, metavar="ALPHA", help="stake, in alpha")
    reg.add_argument("--validator", action="store_true", help="give it a validator permit")

    adv = sub.add_parser("advance", help="move the chain forward N blocks",
                         description="Move the devnet forward N blocks at once.")
    adv.add_argument("path", type=Path, help="the devnet file")
    adv.add_argument("blocks", type=int, help="how many blocks")

    show = sub.add_parser("show", help="print neurons, commitments and recent weights",
                          description="Print the neurons, commitments and recent weights.")
    show.add_argument("path", type=Path, help="the devnet file")
    return parser


def _open(path: Path) -> DevnetChain:
    return DevnetChain(path, create=False)


def _register(args: argparse.Namespace, console: Console) -> None:
    chain = _open(args.path)
    coldkey = None
    if args.hotkey:
        hotkey = args.hotkey
    else:
        if args.generate:
            wallet = create_dev_wallet(args.generate, args.wallet_hotkey, args.wallet_path)
        else:
            wallet = load_wallet(args.wallet_name, args.wallet_hotkey, args.wallet_path)
        hotkey, coldkey = wallet.hotkey.ss58_address, wallet.coldkeypub.ss58_address
    uid = chain.register(hotkey, coldkey=coldkey, stake=args.stake, validator_permit=args.validator)
    console.print(f"registered {hotkey} as uid {uid} on netuid {chain.netuid}")


def _show(path: Path, console: Console) -> None:
    chain = _open(path)
    graph = chain.metagraph()
    table = Table(title=f"devnet {path} — netuid {graph.netuid}, block {graph.block}")
    for column in ("uid", "hotkey", "stake", "permit", "commitment", "block"):
        table.add_column(column)
    for n in graph.neurons:
        table.add_row(  # hotkeys and commitments are anyone's text: shown, never markup
            str(n.uid),
            Text(printable(n.hotkey, 64)),
            f"{n.stake:g}",
            "yes" if n.validator_permit else "",
            Text(printable(n.commitment or "", 160)),
            "" if n.commitment_block is None else str(n.commitment_block),
        )
    console.print(table)
    weights = chain.validator_weights()
    recent = Table(title="recent weights")
    for column in ("validator uid", "block", "version key", "weights"):
        recent.add_column(column)
    for validator, block, version_key in chain.recent_weights():
        row = weights.get(validator, {})
        text = ", ".join(f"{uid}: {w:.3f}" for uid, w in sorted(row.items()))
        recent.add_row(str(validator), str(block), str(version_key), text)
    console.print(recent)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console()
    try:
        if args.command == "init":
            if args.path.exists():
                console.print(f"[red]{args.path} already exists[/red]; remove it to start over")
                return 1
            chain = DevnetChain(
                args.path,
                netuid=args.netuid,
                block_time_s=args.block_time,
                commit_rate_limit=args.commit_rate_limit,
                weights_rate_limit=args.weights_rate_limit,
            )
            console.print(
                f"devnet {args.path}: netuid {chain.netuid}, {chain.block_time_s:g}s blocks"
            )
        elif args.command == "register":
            _register(args, console)
        elif args.command == "advance":
            console.print(f"block {_open(args.path).advance(args.blocks)}")
        else:
            _show(args.path, console)
    except FinetuneError as error:
        console.print(Text("error: ", style="red") + Text(printable(error)))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
