"""Rehabilitation sessions: guided exercise protocols, crash-safe recording, loading and repair.

The clinical module reads sessions through ``load_session(path) -> Session`` (format: ``docs/formats.md``).
"""

from realtime.session.loader import Session, load_session
from realtime.session.protocol import PromptState, Protocol, ProtocolRunner, load_protocol

__all__ = ["PromptState", "Protocol", "ProtocolRunner", "Session", "load_protocol", "load_session"]
