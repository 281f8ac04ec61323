"""Where loaders get their data from, and how patiently they ask for it."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class DataConfig(BaseModel):
    """Data-source settings shared by every loader.

    Lookup order for a dataset backed by real rows: a local override file
    ``data_dir/<dataset_id>.jsonl`` (or ``.parquet``) if present; else, when ``offline``, the
    small sample bundled with the package; else the datasets-server rows API at ``endpoint``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    offline: bool = Field(
        default=False,
        description="Never touch the network: use local override files or the bundled samples.",
    )
    data_dir: Path | None = Field(
        default=None,
        description="Folder of local override files named <dataset_id>.jsonl or .parquet.",
    )
    timeout_s: float = Field(
        default=30.0, gt=0, description="Deadline of one HTTP request, connect to last byte."
    )
    retries: int = Field(default=3, ge=0, description="Extra attempts after a failed HTTP request.")
    backoff_s: float = Field(
        default=1.0,
        ge=0,
        description="First retry delay; doubles on each retry unless the server sends Retry-After.",
    )
    max_retry_after_s: float = Field(
        default=120.0,
        ge=0,
        description="Cap on a server's Retry-After, so a hostile value cannot stall a round.",
    )
    endpoint: str = Field(
        default="https://datasets-server.huggingface.co",
        description="Base URL of the Hugging Face datasets-server (rows and size API).",
    )
    hub_endpoint: str = Field(
        default="https://huggingface.co",
        description="Base URL of the Hub API, asked only to check pinned dataset revisions.",
    )
    revisions: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Pinned revisions (commit sha), keyed by Hub dataset id (e.g. google/boolq) or by "
            "loader id. The rows API serves only the current revision, so a remote load fails "
            "when the Hub's current sha differs from the pin; pinned data can then be supplied "
            "as a local file in data_dir."
        ),
    )

    def revision_for(self, hub_id: str, loader_id: str) -> str | None:
        """The pinned revision for a dataset, looked up by Hub id first, then loader id."""
        return self.revisions.get(hub_id) or self.revisions.get(loader_id)


__all__ = ["DataConfig"]
