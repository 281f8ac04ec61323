"""finetune: validator and miner library for the fine-tuning subnet."""

__version__ = "0.1.0"


def version_key(version: str = __version__) -> int:
    """The chain's weights version key: 1000*major + 10*minor + patch (SPEC §5)."""
    major, minor, patch = (int(part) for part in version.split(".")[:3])
    return 1000 * major + 10 * minor + patch


__all__ = ["__version__", "version_key"]
