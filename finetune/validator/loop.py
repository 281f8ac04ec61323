"""The validator daemon: one loop owns the state; helper threads only feed it.

Threads (SPEC §8): metagraph sync, model updater, disk cleanup and weight setter run in the
background and talk to the eval loop through a bounded queue and two guarded references
(the latest metagraph, the latest weights). Only the eval loop reads or writes `state`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

import constants
from finetune.chain import ChainClient, MetagraphSnapshot
from finetune.competition import Competition, Schedule, ScheduleEntry
from finetune.datasets import DataConfig
from finetune.errors import ChainError, FinetuneError
from finetune.protocol import ScoringProtocol
from finetune.scoring import fallback_seed, sync_window_start, window_seed
from finetune.validator import report
from finetune.validator.metrics import MetricsSink, NullSink
from finetune.validator.round import (
    RoundResult,
    apply_round,
    execute_round,
    load_round_data,
    plan_round,
    subnet_weights,
)
from finetune.validator.state import TrackedModel, ValidatorState, load_state, save_state
from finetune.validator.updater import ModelFetcher, UpdateResult, high_stake_picks, update_models
from finetune.validator.worker import WorkerOutcome, run_isolated

logger = logging.getLogger(__name__)


@dataclass
class LoopConfig:
    """The parts of the settings the loop itself uses (built from ValidatorSettings)."""

    state_path: Path
    device: str = "cpu"
    batch_tokens: int = 8192
    model_deadline_s: float = constants.MODEL_EVAL_DEADLINE_S
    worker_memory_bytes: int | None = None  # host memory a scoring worker may use; None: no limit
    max_samples: int | None = None
    set_weights: bool = True
    max_rounds: int | None = None
    heartbeat_path: Path | None = None
    metagraph_sync_s: float = constants.METAGRAPH_SYNC_S
    uid_check_s: float = constants.UID_CHECK_INTERVAL_S
    weights_s: float = constants.WEIGHTS_INTERVAL_S
    weights_retry_s: float = constants.WEIGHTS_RETRY_S
    log_format: str = "auto"  # round reports: auto (table on a terminal, lines off one) | table | text | json
    tokenizer_dir: Path | None = None  # where fixed tokenizers (Xenova/gpt-4) are cached
    status_port: int | None = None  # serve the read-only status page on 127.0.0.1:PORT
    status_host: str = "127.0.0.1"
    cleanup_s: float = constants.MODEL_CLEANUP_INTERVAL_S
    idle_s: float = 30
    genesis_block: int = constants.SUBNET_GENESIS_BLOCK
    window_blocks: int = constants.SYNC_WINDOW_BLOCKS
    updates_per_step: int = 16
    high_stake_min_stake: float = constants.HIGH_STAKE_VALIDATOR_MIN_STAKE
    high_stake_min_weight: float = constants.HIGH_STAKE_WEIGHT_MIN
    data: DataConfig = field(default_factory=DataConfig)


class Validator:
    """Wires the chain, the store and the evaluator into rounds. See `run` and `run_once`."""

    def __init__(
        self,
        *,
        config: LoopConfig,
        chain: ChainClient,
        schedule: Schedule,
        fetcher: ModelFetcher,
        wallet: Any = None,
        weights_chain: ChainClient | None = None,
        cleanup: Callable[[dict[str, str]], None] | None = None,
        sink: MetricsSink | None = None,
        console: Console | None = None,
        evaluate: Callable[..., WorkerOutcome] = run_isolated,
    ) -> None:
        self.config = config
        self.chain = chain
        self.weights_chain = weights_chain or chain
        self.schedule = schedule
        self.fetcher = fetcher
        self.wallet = wallet
        self.cleanup = cleanup
        self.sink = sink or NullSink()
        self.console = console or report.make_console()
        self.evaluate = evaluate
        self.stop_event = threading.Event()
        self.state: ValidatorState = load_state(config.state_path)
        self.rounds_done = 0
        self.results: list[RoundResult] = []  # the rounds of the latest rounds step only
        self._updates: queue.Queue[UpdateResult] = queue.Queue(maxsize=256)
        self._guard = threading.Lock()
        self._metagraph: MetagraphSnapshot | None = None
        self._weights: dict[str, float] = dict(self.state.last_weights)
        self._realigned_block = -1
        self._updater_view: dict[str, TrackedModel] = dict(self.state.models)
        self._high_stake_picks: set[str] = set()
        self._round_weights: dict[str, float] | None = None
        self._announced_window = -1

    # ---- metagraph ------------------------------------------------------------------
    def sync_metagraph(self) -> MetagraphSnapshot:
        snapshot = self.chain.metagraph()
        with self._guard:
            self._metagraph = snapshot
        return snapshot

    @property
    def metagraph(self) -> MetagraphSnapshot | None:
        with self._guard:
            return self._metagraph

    # ---- model updates --------------------------------------------------------------
    def update_step(self, *, limit: int | None, start_uid: int = 0, enqueue: bool = True) -> list[UpdateResult]:
        """Check due uids and queue the results for the eval loop (updater thread side).

        With ``enqueue=False`` (the synchronous `run_once`) the caller applies the results
        itself, so a subnet with more uids than the queue holds cannot block it.
        """
        snapshot = self.metagraph
        if snapshot is None:
            return []
        with self._guard:
            view = dict(self._updater_view)
        results = update_models(view, snapshot, schedule=self.schedule, fetcher=self.fetcher,
                                interval_s=self.config.uid_check_s, limit=limit, start_uid=start_uid,
                                should_abort=self.stop_event.is_set)
        with self._guard:
            for result in results:
                self._updater_view[result.hotkey] = result.model
        if enqueue:
            for result in results:
                self._updates.put(result)  # blocks when the eval loop is far behind: back-pressure
        return results

    def scan_high_stake_weights(self) -> set[str]:
        """Updater side: remember the models that high-stake validators weight."""
        snapshot = self.metagraph
        if snapshot is None:
            return set()
        picks = high_stake_picks(snapshot, self.chain.validator_weights(),
                                 min_stake=self.config.high_stake_min_stake,
                                 min_weight=self.config.high_stake_min_weight)
        with self._guard:
            self._high_stake_picks = picks
        return picks

    def _queue_high_stake_picks(self, active: set[int], block: int) -> None:
        """Eval loop side: a picked ready model not evaluated in the last
        `HIGH_STAKE_REEVAL_BLOCKS` blocks joins the next round (as the reference's scan)."""
        with self._guard:
            picks = set(self._high_stake_picks)
        for hotkey in sorted(picks):
            model = self.state.models.get(hotkey)
            if model is None or model.status != "ready" or model.competition_id not in active:
                continue
            comp = self.state.competition(model.competition_id)
            history = comp.history.get(hotkey, [])
            recent = bool(history) and history[-1].window_block > block - constants.HIGH_STAKE_REEVAL_BLOCKS
            if hotkey not in comp.keep and hotkey not in comp.pending and not recent:
                comp.pending.append(hotkey)

    def apply_updates(self) -> int:
        """Eval loop side: fold queued update results into the state."""
        applied = 0
        while True:
            try:
                result = self._updates.get_nowait()
            except queue.Empty:
                return applied
            self._apply_update(result)
            applied += 1

    def _apply_update(self, result: UpdateResult) -> None:
        self.state.models[result.hotkey] = result.model
        if result.changed:
            comp = self.state.competition(result.model.competition_id)
            if result.hotkey not in comp.pending:
                comp.pending.append(result.hotkey)

    def referenced_models(self) -> dict[str, str]:
        """hotkey -> revision of every model on disk that must not be cleaned up."""
        with self._guard:
            return {h: m.revision for h, m in self._updater_view.items() if m.status == "ready"}

    # ---- rounds ---------------------------------------------------------------------
    def _seed(self, window_block: int) -> int:
        try:
            return window_seed(self.chain.block_hash(window_block))
        except (FinetuneError, ValueError) as exc:  # ValueError: None or a non-hex answer
            seed = fallback_seed(window_block)
            logger.warning("block hash of %d unavailable (%s); using fallback seed %d", window_block, exc, seed)
            return seed

    def _evaluate_model(self, model: TrackedModel, competition: Competition, task_data,
                        protocol: ScoringProtocol) -> WorkerOutcome:
        options = {"device": self.config.device, "batch_tokens": self.config.batch_tokens,
                   "rules": protocol.eval, "tokenizer_dir": self.config.tokenizer_dir,
                   "label": f"uid {model.uid}"}  # the worker's progress lines name the miner
        try:
            # A model in a round must outlive the cleanup thread's grace period, even when
            # its miner has since committed a newer revision (which prunes the older ones).
            self.fetcher.mark_used(model.hotkey, model.revision)
        except (FinetuneError, OSError) as exc:
            logger.warning("could not mark %s in use: %s", model.local_path, exc)
        with self.fetcher.using(model.hotkey, model.revision):
            return self.evaluate(model.local_path, competition, task_data, deadline_s=self.config.model_deadline_s,
                                 options=options, should_abort=self.stop_event.is_set,
                                 memory_bytes=self.config.worker_memory_bytes)

    def _uids(self) -> tuple[dict[str, int], int]:
        """hotkey -> uid of the latest metagraph, and its size (from the state if none yet)."""
        snapshot = self.metagraph
        if snapshot is None:
            uids = {h: m.uid for h, m in self.state.models.items()}
            return uids, max(uids.values(), default=-1) + 1
        return {n.hotkey: n.uid for n in snapshot.neurons}, max((n.uid for n in snapshot.neurons), default=-1) + 1

    def run_round(self, competition: Competition, block: int, entry: ScheduleEntry | None = None) -> RoundResult | None:
        """Evaluate one competition for the current sync window, if there is anything to do."""
        entry = entry or self.schedule.active_at(block)
        window = sync_window_start(block, genesis=self.config.genesis_block, window=self.config.window_blocks)
        comp_state = self.state.competition(competition.id)
        if comp_state.last_window >= window and not (self.config.max_rounds and comp_state.pending):
            return None
        uids, size = self._uids()
        plan = plan_round(self.state, competition, window_block=window, seed=0,
                          block_now=block, max_samples=self.config.max_samples, protocol=entry.protocol,
                          uids=uids, metagraph_size=size)
        if not plan.hotkeys:
            return None
        plan = replace(plan, seed=self._seed(window))  # read the chain only when there is work
        task_data = load_round_data(plan, self.config.data)
        result = execute_round(
            plan, self.state, lambda m, data: self._evaluate_model(m, competition, data, entry.protocol), task_data)
        if self.stop_event.is_set():
            logger.info("shutdown during round of %s: round abandoned, state untouched", competition.name)
            return None
        self._round_weights = apply_round(self.state, plan, result, entry)
        self.results.append(result)
        return result

    def rounds_step(self) -> int:
        """Run every active competition's round that is due. Returns how many ran."""
        self.results = []  # a daemon runs for months: keep only this step's rounds
        block = self.chain.current_block()
        self._realign_to_metagraph()
        entry = self.schedule.active_at(block)
        active = {str(share.competition.id) for share in entry.competitions}
        ended = [cid for cid in self.state.competitions if cid not in active]
        for cid in ended:
            logger.info("competition %s is no longer active: dropping its weights", cid)
            del self.state.competitions[cid]
        window = sync_window_start(block, genesis=self.config.genesis_block, window=self.config.window_blocks)
        self._queue_high_stake_picks({share.competition.id for share in entry.competitions}, block)
        ran = 0
        for share in entry.competitions:
            if self.stop_event.is_set():
                break
            try:
                result = self.run_round(share.competition, block, entry)
            except FinetuneError as exc:  # e.g. no task data at all: skip, try next window
                logger.error("round of %s failed: %s (%s)", share.competition.name, exc, exc.reason)
                continue
            if result is not None:
                ran += 1
                self.rounds_done += 1
        if not ran:
            self._say_when_next(entry, block, window)
        if ran or ended:  # an ended competition's winners lose their weight now, not next round
            if ran and self._round_weights is not None:
                weights = self._round_weights  # as the last round left them
            else:
                uids, size = self._uids()
                weights = subnet_weights(self.state, entry, uids=uids, size=size)
            self.state.last_weights = weights
            with self._guard:
                self._weights = dict(weights)
        save_state(self.state, self.config.state_path)
        self._report_rounds()  # only now: no output may stand between a round and its state
        return ran

    def _say_when_next(self, entry: ScheduleEntry, block: int, window: int) -> None:
        """Once per window: the rounds are done, and when the next are due (not silence)."""
        if self._announced_window == window:
            return
        scored = [s.competition.name for s in entry.competitions
                  if self.state.competition(s.competition.id).last_window >= window]
        if not scored:
            return
        self._announced_window = window
        next_block = window + self.config.window_blocks
        minutes = max(next_block - block, 0) * constants.BLOCK_TIME_S / 60
        logger.info("window %d scored (%s); next round at block %d, ~%.0f min", window, ", ".join(scored),
                    next_block, minutes)

    def _report_rounds(self) -> None:
        """Tables and metric records of this step's rounds; a failure here costs nothing."""
        for result in self.results:
            report.print_round(self.console, result, self.config.log_format)
            try:
                self.sink.log(report.round_record(result))
            except Exception:  # noqa: BLE001 - wandb raises its own errors; metrics never cost a round
                logger.exception("metrics sink failed; the round is kept")
        if self.results and any(m.status == "rejected" for m in self.state.models.values()):
            report.show(self.console, report.rejections_table(self.state.models))  # what miners are told

    # ---- weights --------------------------------------------------------------------
    def _realign_to_metagraph(self) -> None:
        """Forget deregistered hotkeys whenever a newer metagraph has arrived."""
        snapshot = self.metagraph
        if snapshot is None or snapshot.block <= self._realigned_block:
            return
        successors = None
        if self.schedule.protocol_at(snapshot.block).weights.smoothing == "reference":
            holder = {n.uid: n.hotkey for n in snapshot.neurons}  # the reference weighs uids
            successors = {h: holder[m.uid] for h, m in self.state.models.items() if m.uid in holder}
        dropped = self.state.realign(snapshot.hotkeys, successors)
        registered = set(snapshot.hotkeys)
        with self._guard:  # the updater's view too, or their files would never be cleaned up
            for hotkey in [h for h in self._updater_view if h not in registered]:
                del self._updater_view[hotkey]
        if dropped:
            logger.info("deregistered since the last sync, forgotten: %s", ", ".join(h[:8] for h in dropped))
        self._realigned_block = snapshot.block

    def weights_by_uid(self) -> dict[int, float]:
        snapshot = self.metagraph
        with self._guard:
            weights = dict(self._weights)
        if snapshot is None:
            return {}
        uid_of = {n.hotkey: n.uid for n in snapshot.neurons}
        by_uid = {uid_of[h]: w for h, w in weights.items() if h in uid_of and w > 0}
        total = sum(by_uid.values())
        return {uid: w / total for uid, w in by_uid.items()} if total > 0 else {}

    def set_weights_once(self) -> bool:
        weights = self.weights_by_uid()
        if not weights:
            logger.info("no weights to set yet")
            return False
        snapshot = self.metagraph
        report.show(self.console, report.weights_table(weights, {n.uid: n.hotkey for n in snapshot.neurons}))
        if not self.config.set_weights:
            logger.info("offline: not setting weights")
            return True
        key = self.schedule.protocol_at(snapshot.block).weights_version_key
        try:
            self.weights_chain.set_weights(self.wallet, weights, version_key=key)
        except ChainError as exc:
            logger.warning("set_weights failed (%s: %s); will retry", exc.reason, exc)
            return False
        logger.info("weights set for %d uids", len(weights))
        return True

    # ---- drivers --------------------------------------------------------------------
    def _heartbeat(self) -> None:
        if self.config.heartbeat_path is not None:
            self.config.heartbeat_path.parent.mkdir(parents=True, exist_ok=True)
            self.config.heartbeat_path.touch()

    def run_once(self) -> list[RoundResult]:
        """One synchronous pass: sync, check every uid, one round per active competition,
        set weights. For the demo, tests and dry runs."""
        self.sync_metagraph()
        self._realign_to_metagraph()
        with self._guard:
            self._updater_view = dict(self.state.models)
        self.scan_high_stake_weights()
        for result in self.update_step(limit=None, enqueue=False):
            self._apply_update(result)
        self.rounds_step()
        self.set_weights_once()
        self._heartbeat()
        return list(self.results)

    def run(self) -> int:
        """The daemon. Returns 0 after a clean stop (signal or max_rounds)."""
        from finetune.validator.threads import start_background_threads

        self._heartbeat()
        snapshot = self._retry_until_stopped(self.sync_metagraph, "initial metagraph sync")
        if snapshot is None:
            return 0
        self._realign_to_metagraph()
        entry = self.schedule.active_at(snapshot.block)
        if not self._weights_version_accepted(entry.protocol.weights_version_key):
            return 2
        if entry.protocol.weights.smoothing == "reference":
            # The reference sets its start-up weights without the threshold until a round ends.
            uids, size = self._uids()
            with self._guard:
                self._weights = subnet_weights(self.state, entry, uids=uids, size=size, threshold=0.0)
        with self._guard:
            self._updater_view = dict(self.state.models)
        threads = start_background_threads(self)
        status_server = self._start_status_server()
        try:
            while not self.stop_event.is_set():
                self.apply_updates()
                try:
                    ran = self.rounds_step()
                except ChainError as exc:
                    logger.warning("chain unavailable for the eval loop (%s); retrying", exc)
                    ran = 0
                except Exception:  # noqa: BLE001 - the daemon's boundary: log, back off, go on
                    logger.exception("eval loop step failed; retrying after %.0fs", self.config.idle_s)
                    ran = 0
                self._heartbeat()
                if self.config.max_rounds is not None and self.rounds_done >= self.config.max_rounds:
                    self.set_weights_once()  # a bounded run still leaves its weights on chain
                    break
                if not ran:
                    self.stop_event.wait(self.config.idle_s)
        finally:
            self.stop_event.set()
            save_state(self.state, self.config.state_path)
            if status_server is not None:
                status_server.close()
            for thread in threads:
                thread.join(timeout=5)
        return 0

    def _start_status_server(self):
        """The read-only status page (`--status.port`); it reads the saved state file, never
        the live state, so it needs no lock and cannot disturb a round."""
        if self.config.status_port is None:
            return None
        from finetune.validator.status import read_state
        from finetune.validator.status_http import start_status_server

        try:
            server = start_status_server(lambda: read_state(self.config.state_path),
                                         host=self.config.status_host, port=self.config.status_port)
        except OSError as exc:  # the port is taken: the validator runs on without its page
            logger.error("status page not started on %s:%d: %s", self.config.status_host, self.config.status_port, exc)
            return None
        logger.info("status page at %s", server.url)
        return server

    def _weights_version_accepted(self, ours: int) -> bool:
        """Refuse to run when the subnet requires a newer weights version than ours: every
        weight setting would be refused, so the validator would only burn its time."""
        if not self.config.set_weights:
            return True
        try:
            required = self.weights_chain.weights_version()
        except ChainError as exc:
            logger.warning("could not read the subnet's weights version (%s); going on", exc)
            return True
        if ours < required:
            logger.error("the subnet requires weights version %d, this validator's protocol sends %d: "
                         "upgrade finetune (its schedule names the protocol in force)", required, ours)
            return False
        return True

    def _retry_until_stopped(self, fn, what: str):
        delay = 5.0
        while not self.stop_event.is_set():
            try:
                return fn()
            except ChainError as exc:
                logger.warning("%s failed (%s); retrying in %.0fs", what, exc, delay)
                self.stop_event.wait(delay)
                delay = min(delay * 2, 300)
        return None
