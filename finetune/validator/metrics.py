"""Where round results go besides the console: nothing, a JSONL file, or Weights & Biases."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class MetricsSink(Protocol):
    def log(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class NullSink:
    def log(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlSink:
    """Appends one JSON line per round."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=str) + "\n")

    def close(self) -> None:
        pass


class WandbSink:
    """One wandb run per `rounds_per_run` rounds; wandb is imported only here."""

    def __init__(self, *, project: str, entity: str | None, mode: str, config: dict, dir: Path,
                 rounds_per_run: int = 100) -> None:
        try:
            import wandb
        except ImportError as exc:  # optional dependency
            raise ImportError(
                "wandb is not installed: `pip install wandb`, or unset --wandb.project"
            ) from exc
        self._wandb = wandb
        self._init_kwargs = dict(project=project, entity=entity, mode=mode, config=config, dir=str(dir))
        dir.mkdir(parents=True, exist_ok=True)
        self._rounds_per_run = rounds_per_run
        self._run = None
        self._count = 0

    def log(self, record: dict[str, Any]) -> None:
        if self._run is None or self._count >= self._rounds_per_run:
            self.close()
            self._run = self._wandb.init(reinit="finish_previous", **self._init_kwargs)
            self._count = 0
        self._run.log(record)
        self._count += 1

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None
