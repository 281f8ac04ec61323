"""A local chain in one SQLite file: a `ChainClient` that several processes share.

For running a validator and miners on one machine without a subtensor node. The file is in
WAL mode (readers never block the writer); every call opens its own short-lived connection
with a busy timeout equal to the call deadline, and writes run in ``BEGIN IMMEDIATE``
transactions, so concurrent processes serialise cleanly. A lock held past the deadline
becomes `ChainTimeout`.

Blocks advance with wall-clock time, ``block = offset + floor((now - genesis) / block_time_s)``,
and by command (`DevnetChain.advance` adds to the offset). Block hashes are deterministic:
``0x`` + sha256(``"devnet:{netuid}:{block}"``).

Rules, kept close to the chain's: publishing a commitment and setting weights need a
registered hotkey (`NotRegistered`); each is rate limited per hotkey (`RateLimited` with
``retry_after_blocks``; allowed once ``blocks since last >= limit``). Setting weights needs
no validator permit (the chain's client-side preflight does not check it either), but every
weighted uid must be registered. Weight rows are stored normalised to sum 1, as the chain
read returns them.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from finetune.chain.client import MetagraphSnapshot, NeuronInfo, hotkey_address
from finetune.chain.model_id import commitment_text
from finetune.errors import (
    ChainError,
    ChainTimeout,
    ChainUnreachable,
    ConfigError,
    NotRegistered,
    RateLimited,
)

DEFAULT_COMMIT_RATE_LIMIT = 10  # blocks between two commitments of one hotkey
DEFAULT_WEIGHTS_RATE_LIMIT = 10  # blocks between two weight settings of one validator

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS neurons (
    uid INTEGER PRIMARY KEY, hotkey TEXT NOT NULL UNIQUE, coldkey TEXT,
    stake REAL NOT NULL DEFAULT 0, validator_permit INTEGER NOT NULL DEFAULT 0,
    registered_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS commitments (
    hotkey TEXT PRIMARY KEY, data TEXT NOT NULL, block INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS weights (
    validator_uid INTEGER NOT NULL, uid INTEGER NOT NULL, weight REAL NOT NULL,
    block INTEGER NOT NULL, version_key INTEGER NOT NULL, PRIMARY KEY (validator_uid, uid));
CREATE TABLE IF NOT EXISTS weight_sets (
    validator_uid INTEGER PRIMARY KEY, block INTEGER NOT NULL, version_key INTEGER NOT NULL);
"""


def devnet_block_hash(netuid: int, block: int) -> str:
    """The devnet's deterministic hash of `block`."""
    return "0x" + hashlib.sha256(f"devnet:{netuid}:{block}".encode()).hexdigest()


class DevnetChain:
    """A `ChainClient` backed by a SQLite file.

    Args:
        path: the devnet file.
        netuid: the subnet; must match the file's if it exists (None: take the file's).
        block_time_s: seconds per block, used only when creating the file.
        timeout_s: deadline of every call (the SQLite busy timeout).
        create: create the file if missing (else `ConfigError`).
        commit_rate_limit: blocks between commitments of one hotkey (creation only).
        weights_rate_limit: blocks between weight settings of one validator (creation only).
        clock: wall-clock source, for tests.

    Raises:
        ConfigError: the file is missing with ``create=False``, or its netuid differs.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        netuid: int | None = None,
        block_time_s: float = 12.0,
        timeout_s: float = 10.0,
        create: bool = True,
        commit_rate_limit: int = DEFAULT_COMMIT_RATE_LIMIT,
        weights_rate_limit: int = DEFAULT_WEIGHTS_RATE_LIMIT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._clock = clock
        if not self.path.is_file() and not create:
            raise ConfigError(f"devnet file {str(self.path)!r} does not exist")
        if block_time_s <= 0:
            raise ConfigError(f"block time must be positive, got {block_time_s}")
        defaults = {
            "netuid": str(1 if netuid is None else netuid),
            "genesis_time": repr(clock()),
            "block_offset": "0",
            "block_time_s": repr(float(block_time_s)),
            "commit_rate_limit": str(commit_rate_limit),
            "weights_rate_limit": str(weights_rate_limit),
            "weights_version": "0",  # the subnet's WeightsVersionKey: lowest version key accepted
        }
        with self._write() as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)  # not executescript: that would commit mid-transaction
            db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", defaults.items())
        meta = self._meta()
        stored = int(meta["netuid"])
        if netuid is not None and netuid != stored:
            raise ConfigError(f"devnet {str(self.path)!r} is netuid {stored}, not {netuid}")
        self.netuid = stored
        self.block_time_s = float(meta["block_time_s"])

    # --- connections ----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            return sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        except sqlite3.Error as error:
            raise ChainUnreachable(f"cannot open devnet {str(self.path)!r}: {error}") from error

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            # WAL persists in the file; setting it again is a cheap no-op.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(begin)
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                raise ChainTimeout(f"devnet busy for over {self.timeout_s:g}s: {error}") from error
            raise ChainError(f"devnet {str(self.path)!r}: {error}") from error
        finally:
            db.close()

    def _write(self) -> Any:
        return self._transaction("BEGIN IMMEDIATE")

    def _read(self) -> Any:
        return self._transaction("BEGIN")

    def _meta(self, db: sqlite3.Connection | None = None) -> dict[str, str]:
        if db is None:
            with self._read() as db:
                return self._meta(db)
        return dict(db.execute("SELECT key, value FROM meta").fetchall())

    def _block(self, db: sqlite3.Connection) -> int:
        meta = self._meta(db)
        elapsed = max(0.0, self._clock() - float(meta["genesis_time"]))
        return int(meta["block_offset"]) + math.floor(elapsed / float(meta["block_time_s"]))

    @staticmethod
    def _uid(db: sqlite3.Connection, hotkey: str) -> int | None:
        row = db.execute("SELECT uid FROM neurons WHERE hotkey = ?", (hotkey,)).fetchone()
        return None if row is None else int(row[0])

    # --- devnet administration --------------------------------------------------

    def advance(self, blocks: int) -> int:
        """Move the chain forward by `blocks` at once; returns the new block."""
        if blocks < 0:
            raise ConfigError(f"cannot advance by a negative number of blocks ({blocks})")
        with self._write() as db:
            db.execute(
                "UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'block_offset'",
                (blocks,),
            )
            return self._block(db)

    def register(
        self,
        hotkey: str,
        *,
        coldkey: str | None = None,
        stake: float = 0.0,
        validator_permit: bool = False,
    ) -> int:
        """Register `hotkey` on the subnet and return its uid (the next free one).

        Registering a hotkey again keeps its uid and updates its stake, permit and coldkey.
        """
        if not hotkey:
            raise ConfigError("hotkey must not be empty")
        with self._write() as db:
            uid = self._uid(db, hotkey)
            if uid is not None:
                db.execute(
                    "UPDATE neurons SET stake = ?, validator_permit = ?, "
                    "coldkey = COALESCE(?, coldkey) WHERE uid = ?",
                    (float(stake), int(validator_permit), coldkey, uid),
                )
                return uid
            uid = db.execute("SELECT COALESCE(MAX(uid) + 1, 0) FROM neurons").fetchone()[0]
            db.execute(
                "INSERT INTO neurons VALUES (?, ?, ?, ?, ?, ?)",
                (uid, hotkey, coldkey, float(stake), int(validator_permit), self._block(db)),
            )
            return int(uid)

    def set_weights_version(self, version: int) -> None:
        """Set the subnet's required weights version key (as its owner would on chain)."""
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('weights_version', ?)", (str(int(version)),))

    def recent_weights(self) -> list[tuple[int, int, int]]:
        """``(validator_uid, block, version_key)`` of each validator's last weight setting."""
        with self._read() as db:
            rows = db.execute(
                "SELECT validator_uid, block, version_key FROM weight_sets ORDER BY block DESC"
            ).fetchall()
        return [tuple(int(x) for x in row) for row in rows]  # type: ignore[misc]

    # --- ChainClient ----------------------------------------------------------------

    def current_block(self) -> int:
        """The current block (wall clock plus every `advance`)."""
        with self._read() as db:
            return self._block(db)

    def block_hash(self, block: int) -> str:
        """Deterministic 0x-hex hash of `block`."""
        return devnet_block_hash(self.netuid, block)

    def metagraph(self) -> MetagraphSnapshot:
        """All neurons with their commitments, read in one transaction."""
        with self._read() as db:
            block = self._block(db)
            rows = db.execute(
                "SELECT n.uid, n.hotkey, n.stake, n.validator_permit, c.data, c.block "
                "FROM neurons n LEFT JOIN commitments c ON c.hotkey = n.hotkey ORDER BY n.uid"
            ).fetchall()
        neurons = tuple(
            NeuronInfo(
                int(uid), hk, float(stake), bool(permit), commitment_text(data),
                None if cb is None else int(cb),
            )
            for uid, hk, stake, permit, data, cb in rows
        )
        return MetagraphSnapshot(block=block, netuid=self.netuid, neurons=neurons)

    def publish_commitment(self, wallet: Any, data: str) -> None:
        """Store `data` as the wallet hotkey's commitment at the current block.

        Raises:
            ValueError: `data` is longer than 128 utf-8 bytes (the chain's Raw limit).
            NotRegistered: the hotkey is not registered.
            RateLimited: the hotkey committed less than ``commit_rate_limit`` blocks ago.
        """
        if len(data.encode("utf-8")) > 128:
            raise ValueError(f"commitment is {len(data.encode())} bytes; one Raw field holds 128")
        hotkey = hotkey_address(wallet)
        with self._write() as db:
            if self._uid(db, hotkey) is None:
                raise NotRegistered(f"hotkey {hotkey} is not registered on devnet", hotkey=hotkey)
            block = self._block(db)
            last = db.execute(
                "SELECT block FROM commitments WHERE hotkey = ?", (hotkey,)
            ).fetchone()
            self._enforce_rate(db, "commit_rate_limit", block, last and last[0], hotkey)
            db.execute("INSERT OR REPLACE INTO commitments VALUES (?, ?, ?)", (hotkey, data, block))

    def read_commitment(self, hotkey: str) -> tuple[str, int] | None:
        """The text and block of `hotkey`'s commitment, or None."""
        with self._read() as db:
            row = db.execute(
                "SELECT data, block FROM commitments WHERE hotkey = ?", (hotkey,)
            ).fetchone()
        return None if row is None else (commitment_text(row[0]), int(row[1]))

    def set_weights(self, wallet: Any, weights: Mapping[int, float], *, version_key: int) -> None:
        """Replace the wallet hotkey's weight row (normalised to sum 1, zeros dropped).

        Raises:
            ValueError: a weight is negative or not finite, all are zero, or a uid is unknown.
            NotRegistered: the hotkey is not registered.
            RateLimited: weights were set less than ``weights_rate_limit`` blocks ago.
        """
        clean = {int(uid): float(w) for uid, w in weights.items()}
        if any(not math.isfinite(w) or w < 0 for w in clean.values()):
            raise ValueError("weights must be finite and non-negative")
        total = sum(clean.values())
        if total <= 0:
            raise ValueError("all weights are zero; nothing to set")
        hotkey = hotkey_address(wallet)
        with self._write() as db:
            validator = self._uid(db, hotkey)
            if validator is None:
                raise NotRegistered(f"hotkey {hotkey} is not registered on devnet", hotkey=hotkey)
            known = {row[0] for row in db.execute("SELECT uid FROM neurons")}
            if unknown := sorted(set(clean) - known):
                raise ValueError(f"weights name unregistered uids {unknown}")
            required = int(self._meta(db).get("weights_version", "0"))
            if version_key < required:  # the chain's IncorrectWeightVersionKey
                raise ChainError(
                    f"weights version key {version_key} is below the subnet's {required}",
                    reason="weights_version", required=required,
                )
            block = self._block(db)
            last = db.execute(
                "SELECT block FROM weight_sets WHERE validator_uid = ?", (validator,)
            ).fetchone()
            self._enforce_rate(db, "weights_rate_limit", block, last and last[0], hotkey)
            db.execute("DELETE FROM weights WHERE validator_uid = ?", (validator,))
            db.executemany(
                "INSERT INTO weights VALUES (?, ?, ?, ?, ?)",
                [(validator, u, w / total, block, version_key) for u, w in clean.items() if w > 0],
            )
            db.execute(
                "INSERT OR REPLACE INTO weight_sets VALUES (?, ?, ?)",
                (validator, block, version_key),
            )

    def weights_version(self) -> int:
        """The lowest weights version key the subnet accepts (0 until set)."""
        return int(self._meta().get("weights_version", "0"))

    def validator_weights(self) -> dict[int, dict[int, float]]:
        """Each validator uid's weight row (fractions summing to 1)."""
        with self._read() as db:
            rows = db.execute(
                "SELECT validator_uid, uid, weight FROM weights ORDER BY validator_uid, uid"
            ).fetchall()
        out: dict[int, dict[int, float]] = {}
        for validator, uid, weight in rows:
            out.setdefault(int(validator), {})[int(uid)] = float(weight)
        return out

    def _enforce_rate(
        self, db: sqlite3.Connection, key: str, block: int, last: int | None, hotkey: str
    ) -> None:
        limit = int(self._meta(db)[key])
        if last is not None and block - last < limit:
            wait = limit - (block - last)
            raise RateLimited(
                f"{hotkey} must wait {wait} more blocks ({key} is {limit} blocks)",
                retry_after_blocks=wait,
                hotkey=hotkey,
            )
