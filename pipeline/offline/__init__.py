"""The offline speech-to-speech server: the vendor's API shape, WORLD voice conversion, and fault injection.

``create_app(ServerConfig(...))`` builds the ASGI app; ``sts-pipeline serve-local`` runs it under uvicorn.
"""

from __future__ import annotations

from pipeline.offline.app import create_app
from pipeline.offline.faults import FaultSettings
from pipeline.offline.state import ServerConfig
from pipeline.offline.voices import DEFAULT_VOICE_ID, VOICES, Voice

__all__ = ["DEFAULT_VOICE_ID", "VOICES", "FaultSettings", "ServerConfig", "Voice", "create_app"]
