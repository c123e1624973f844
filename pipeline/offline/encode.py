"""Float blocks at the output rate to the bytes of one of the 21 output formats, as a stream.

``pcm_*`` is converted here (headerless s16le). Everything else goes through one ffmpeg process per response, fed on
stdin while its stdout is read, so encoded bytes leave as soon as ffmpeg emits them: mp3 with libmp3lame at the
format's bitrate, opus with libopus in Ogg at 48 kHz (100 ms pages), μ-law and A-law as raw G.711.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

import numpy as np

from pipeline.formats import OutputFormat

CHUNK_BYTES = 16384


class EncodeError(RuntimeError):
    """ffmpeg could not encode the output (a server fault: answered 500 when nothing was sent yet)."""
#: Ogg page length for opus, in microseconds: short pages let the stream start early
OGG_PAGE_US = 100_000
#: LAME's encoder delay (576) plus the mp3 decoder's (529), in samples at any rate. A streamed mp3 carries no LAME
#: header to tell a decoder to drop them, so the stream starts that much into the audio instead: decoded, every
#: sound lands at its input time and the file is at most one frame (26 ms) longer than the input.
MP3_DELAY_SAMPLES = 1105


def pcm_s16le(x: np.ndarray) -> bytes:
    """Float samples in [-1, 1] to headerless 16-bit little-endian PCM."""
    return np.clip(np.rint(np.asarray(x) * 32767.0), -32768, 32767).astype("<i2").tobytes()


def ffmpeg_args(fmt: OutputFormat) -> list[str]:
    """The ffmpeg command that turns f32le mono at the format's rate on stdin into the format on stdout."""
    codec: dict[str, list[str]] = {
        "mp3": ["-c:a", "libmp3lame", "-b:a", f"{fmt.bitrate_kbps}k", "-f", "mp3"],
        "opus": ["-c:a", "libopus", "-b:a", f"{fmt.bitrate_kbps}k", "-page_duration", str(OGG_PAGE_US), "-f", "ogg"],
        "ulaw": ["-c:a", "pcm_mulaw", "-f", "mulaw"],
        "alaw": ["-c:a", "pcm_alaw", "-f", "alaw"],
    }
    if fmt.codec not in codec:
        raise EncodeError(f"{fmt.name} is not encoded with ffmpeg")
    return ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-f", "f32le", "-ar", str(fmt.sample_rate),
            "-ac", "1", "-i", "pipe:0", "-map_metadata", "-1", *codec[fmt.codec], "-flush_packets", "1", "pipe:1"]


async def encode(blocks: AsyncIterator[np.ndarray], fmt: OutputFormat) -> AsyncGenerator[bytes, None]:
    """Encode ``blocks`` (float32 at ``fmt.sample_rate``) to ``fmt``, yielding bytes as they are produced."""
    if fmt.codec == "pcm":
        async for block in blocks:
            if len(block):
                yield pcm_s16le(block)
        return
    proc = await asyncio.create_subprocess_exec(*ffmpeg_args(fmt), stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdin = proc.stdin

    to_skip = MP3_DELAY_SAMPLES if fmt.codec == "mp3" else 0

    async def feed() -> None:
        nonlocal to_skip
        try:
            async for block in blocks:
                if to_skip:
                    dropped = min(to_skip, len(block))
                    block, to_skip = block[dropped:], to_skip - dropped
                stdin.write(np.asarray(block, dtype="<f4").tobytes())
                await stdin.drain()
        finally:
            stdin.close()

    feeder = asyncio.create_task(feed())
    try:
        while chunk := await proc.stdout.read(CHUNK_BYTES):
            yield chunk
        await feeder
        stderr = await proc.stderr.read()
        if await proc.wait() != 0:
            raise EncodeError(f"ffmpeg failed to encode {fmt.name}: {stderr.decode('utf-8', 'replace')[-300:]}")
    finally:
        if not feeder.done():
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeder
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
