"""A container around the API's headerless outputs, so that a person (and every player) can open them.

``pcm_*`` is headerless signed 16-bit little-endian mono and ``ulaw_8000``/``alaw_8000`` headerless G.711, exactly as
the API returns them. When the output key ends in ``.wav``, the samples are stored behind a RIFF/WAVE header (WAV
carries PCM and both G.711 laws); ``.pcm``/``.raw`` keys stay as the API sent them. The samples are copied in
blocks, never held whole; nothing here runs ffmpeg.
"""

from __future__ import annotations

import struct
from pathlib import Path

from pipeline.formats import OutputFormat

__all__ = ["WAV_CONTENT_TYPE", "wants_wav", "wrap_wav"]

WAV_CONTENT_TYPE = "audio/wav"
#: WAVE format tags and bits per sample of the headerless codecs
_WAVE_FORMATS = {"pcm": (1, 16), "alaw": (6, 8), "ulaw": (7, 8)}


def wants_wav(output_key: str, fmt: OutputFormat) -> bool:
    """Whether this output is stored as WAV: a headerless format written to a ``.wav`` key."""
    return fmt.codec in _WAVE_FORMATS and output_key.lower().endswith(".wav")


def wrap_wav(raw: Path, out: Path, fmt: OutputFormat) -> Path:
    """Write ``raw`` (headerless samples in ``fmt``) to ``out`` behind a RIFF/WAVE header; return ``out``."""
    tag, bits = _WAVE_FORMATS[fmt.codec]
    block_align = bits // 8
    data_bytes = raw.stat().st_size - raw.stat().st_size % block_align
    # non-PCM WAVE needs the 18-byte fmt chunk (cbSize 0) and a fact chunk with the sample count
    fmt_chunk = struct.pack("<HHIIHH", tag, 1, fmt.sample_rate, fmt.sample_rate * block_align, block_align, bits)
    extra = b""
    if tag != 1:
        fmt_chunk += struct.pack("<H", 0)
        extra = b"fact" + struct.pack("<II", 4, data_bytes // block_align)
    header = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_chunk)) + fmt_chunk + extra
              + b"data" + struct.pack("<I", data_bytes))
    with open(out, "wb") as sink, open(raw, "rb") as source:
        sink.write(b"RIFF" + struct.pack("<I", len(header) + data_bytes + (data_bytes % 2)) + header)
        copied = 0
        while copied < data_bytes and (block := source.read(min(1 << 20, data_bytes - copied))):
            sink.write(block)
            copied += len(block)
        if data_bytes % 2:
            sink.write(b"\0")  # RIFF chunks are padded to an even length
    return out
