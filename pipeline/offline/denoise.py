"""Background-noise removal with RNNoise, called through ctypes on the ``librnnoise.so`` that the pyrnnoise wheel ships.

The library is found with ``importlib.util.find_spec`` and loaded directly, because ``import pyrnnoise`` pulls in
audiolab and PyAV at the top. RNNoise works on 48 kHz frames of 480 samples, in float scaled to the int16 range, and
delays its output by exactly 20 ms (960 samples at 48 kHz): the input is padded by that much and the first 960
output samples are dropped, so the result lines up with the input sample for sample.
"""

from __future__ import annotations

import ctypes
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import soxr

RNNOISE_RATE_HZ = 48000
FRAME_SAMPLES = 480
DELAY_SAMPLES = 960
_INT16_SCALE = 32768.0


class DenoiserMissing(RuntimeError):
    """librnnoise.so is not installed (a server fault: answered 500 when nothing was sent yet)."""


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL:
    spec = importlib.util.find_spec("pyrnnoise")
    locations = list(spec.submodule_search_locations or []) if spec else []
    candidates = [Path(location) / "librnnoise.so" for location in locations]
    path = next((candidate for candidate in candidates if candidate.is_file()), None)
    if path is None:
        raise DenoiserMissing("librnnoise.so not found: install the pyrnnoise wheel (pip install --no-deps pyrnnoise)")
    lib = ctypes.CDLL(str(path))
    lib.rnnoise_create.argtypes = [ctypes.c_void_p]
    lib.rnnoise_create.restype = ctypes.c_void_p
    lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
    lib.rnnoise_destroy.restype = None
    lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float),
                                          ctypes.POINTER(ctypes.c_float)]
    lib.rnnoise_process_frame.restype = ctypes.c_float
    return lib


def denoise(x: np.ndarray, rate_hz: int) -> np.ndarray:
    """Remove stationary and non-stationary background noise; same length and timing as ``x`` (float32)."""
    if not len(x):
        return np.zeros(0, dtype=np.float32)
    lib = _library()
    at_48k = soxr.resample(np.asarray(x, dtype=np.float32), rate_hz, RNNOISE_RATE_HZ)
    n_frames = -(-(len(at_48k) + DELAY_SAMPLES) // FRAME_SAMPLES)
    padded = np.zeros(n_frames * FRAME_SAMPLES, dtype=np.float32)
    padded[:len(at_48k)] = at_48k * _INT16_SCALE
    cleaned = np.empty_like(padded)
    state = lib.rnnoise_create(None)
    try:
        float_p = ctypes.POINTER(ctypes.c_float)
        for i in range(n_frames):
            frame_in = padded[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES]
            frame_out = cleaned[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES]
            lib.rnnoise_process_frame(state, frame_out.ctypes.data_as(float_p), frame_in.ctypes.data_as(float_p))
    finally:
        lib.rnnoise_destroy(state)
    aligned = cleaned[DELAY_SAMPLES:DELAY_SAMPLES + len(at_48k)] / _INT16_SCALE
    back = soxr.resample(aligned, RNNOISE_RATE_HZ, rate_hz)
    out = np.zeros(len(x), dtype=np.float32)
    out[:min(len(x), len(back))] = back[:len(x)]
    return out
