"""The offline speech-to-speech server: the vendor's API shape, WORLD voice conversion, and fault injection.

``create_app(ServerConfig(...))`` builds the ASGI app; ``sts-pipeline serve-local`` runs it under uvicorn. Importing
this package is cheap: the names below are loaded on first use (the app pulls in FastAPI, the DSP numpy/pyworld).
Of the rest of the library the server uses only ``pipeline.formats`` (the vendor's published contract) and
``pipeline.__version__``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "create_app": "pipeline.offline.app",
    "FaultSettings": "pipeline.offline.faults",
    "ServerConfig": "pipeline.offline.state",
    "AccountSettings": "pipeline.offline.account",
    "DEFAULT_VOICE_ID": "pipeline.offline.voices",
    "VOICES": "pipeline.offline.voices",
    "Voice": "pipeline.offline.voices",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
