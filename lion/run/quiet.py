"""Silence the third-party messages a user did not ask for, each at its source and by its exact text (never all
warnings): Lightning's advertising tip for its cloud logger, and the deprecation warning Lightning's pytree helper
triggers inside torch (`isinstance(treespec, LeafSpec)`), which says nothing about the user's code."""
from __future__ import annotations

import logging
import warnings

_ADVERTS = ("💡 Tip: For seamless cloud logging",)


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_ADVERTS)


def install() -> None:
    """Idempotent; called by the pipeline before it builds a trainer."""
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropAdverts) for f in log.filters):
        log.addFilter(_DropAdverts())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
