"""Rehabilitation sessions: guided exercise protocols, crash-safe recording, loading and repair.

The clinical module reads sessions through ``load_session(path) -> Session`` (format: ``docs/formats.md``).
The names below are imported on first use: the video encoder process (``python -m
realtime.session.encoder``) must start without pulling in pyarrow and the recorder.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from realtime.session.loader import Session, load_session
    from realtime.session.protocol import PromptState, Protocol, ProtocolRunner, load_protocol

__all__ = ["PromptState", "Protocol", "ProtocolRunner", "Session", "load_protocol", "load_session"]

_WHERE = {"Session": "loader", "load_session": "loader", "PromptState": "protocol", "Protocol": "protocol",
          "ProtocolRunner": "protocol", "load_protocol": "protocol"}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'realtime.session' has no attribute {name!r}")
    return getattr(importlib.import_module(f"realtime.session.{module}"), name)
