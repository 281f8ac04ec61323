"""Build a validator from its settings: the real or local backends, chosen by spec strings."""

from __future__ import annotations

import logging
import signal

from rich.console import Console

import competitions
import constants
from finetune.chain import open_chain
from finetune.datasets import DataConfig
from finetune.errors import ConfigError
from finetune.storage import ModelCache, open_store
from finetune.validator.fetcher import StoreFetcher
from finetune.validator.loop import LoopConfig, Validator
from finetune.validator.metrics import MetricsSink, NullSink, WandbSink
from finetune.validator.settings import ValidatorSettings

logger = logging.getLogger(__name__)


def _sink(settings: ValidatorSettings) -> MetricsSink:
    if not settings.wandb.project:
        return NullSink()
    try:
        return WandbSink(project=settings.wandb.project, entity=settings.wandb.entity, mode=settings.wandb.mode,
                         config=settings.model_dump(mode="json"),
                         dir=settings.state_path.parent / "wandb",
                         rounds_per_run=settings.wandb.rounds_per_run)
    except ImportError as exc:
        raise ConfigError(str(exc)) from exc


def build_validator(settings: ValidatorSettings, *, console: Console | None = None) -> Validator:
    """Wire chain, store, cache, schedule and metrics as the settings say.

    Raises:
        ConfigError: an unknown chain, hub or schedule spec (the message lists the forms).
    """
    chain = open_chain(settings.chain, netuid=settings.netuid, timeout_s=settings.chain_timeout_s)
    weights_chain = (open_chain(settings.weights_chain or settings.chain, netuid=settings.netuid,
                                timeout_s=settings.chain_timeout_s))
    store = open_store(settings.hub)
    cache = ModelCache(settings.model_dir, min_free_bytes=int(settings.min_free_gb * 1024**3),
                       grace_period_s=settings.cleanup_grace_s,
                       download_min_rate_bytes_s=settings.download_min_rate_mib_s * 1024**2)
    schedule = competitions.get_schedule(settings.schedule)
    data = DataConfig(offline=settings.offline, data_dir=settings.data_dir)
    intervals = settings.intervals
    config = LoopConfig(
        state_path=settings.state_path, device=settings.resolved_device(),
        batch_tokens=settings.batch_tokens, model_deadline_s=settings.model_deadline_s,
        worker_memory_bytes=settings.worker_memory_bytes(),
        max_samples=settings.eval_samples, set_weights=settings.sets_weights, max_rounds=settings.max_rounds,
        heartbeat_path=settings.heartbeat_path, metagraph_sync_s=intervals.metagraph_sync_s,
        uid_check_s=intervals.uid_check_s, weights_s=intervals.weights_s, cleanup_s=intervals.cleanup_s,
        idle_s=intervals.idle_s,
        # A devnet starts at block 0; mainnet windows count from the subnet's registration.
        genesis_block=0 if settings.chain.startswith("devnet:") else constants.SUBNET_GENESIS_BLOCK,
        data=data, log_format=settings.log_format, tokenizer_dir=settings.tokenizer_dir,
        status_port=settings.status.port, status_host=settings.status.host,
    )
    # Only weight setting signs anything: --offline and --dont-set-weights run without a wallet.
    wallet = settings.wallet.load() if settings.sets_weights else None
    return Validator(config=config, chain=chain, weights_chain=weights_chain, schedule=schedule,
                     fetcher=StoreFetcher(store, cache), wallet=wallet,
                     cleanup=lambda keep: cache.cleanup(keep), sink=_sink(settings), console=console)


def install_signal_handlers(validator: Validator) -> None:
    """SIGTERM/SIGINT: abandon the current model, save state, exit cleanly."""

    def stop(signum, _frame) -> None:
        logger.info("received %s: stopping after saving state", signal.Signals(signum).name)
        validator.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def run_validator(settings: ValidatorSettings) -> int:
    """Build and run the validator daemon until stopped. Returns the exit code."""
    validator = build_validator(settings)
    install_signal_handlers(validator)
    try:
        return validator.run()
    finally:
        validator.sink.close()


__all__ = ["build_validator", "install_signal_handlers", "run_validator"]
