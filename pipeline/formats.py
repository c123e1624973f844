"""The service's 21 output formats: codec, sample rate, bitrate, Content-Type, file extension, and how ffmpeg reads them."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_OUTPUT_FORMAT = "mp3_44100_128"
FILE_FORMATS = ("pcm_s16le_16", "other")
PCM_S16LE_16_RATE = 16000


@dataclass(frozen=True)
class OutputFormat:
    """One ``codec_samplerate[_bitrate]`` value of the API's ``output_format``."""

    name: str
    codec: str  # mp3 | pcm | ulaw | alaw | opus
    sample_rate: int
    bitrate_kbps: int | None
    content_type: str
    extension: str

    @property
    def headerless(self) -> bool:
        """True for raw formats (pcm, μ-law, A-law): a reader must be told the sample format and rate."""
        return self.codec in ("pcm", "ulaw", "alaw")

    def ffmpeg_input_args(self) -> list[str]:
        """Arguments that go before ``-i`` so ffmpeg can decode a file of this format."""
        raw = {"pcm": "s16le", "ulaw": "mulaw", "alaw": "alaw"}
        if self.codec in raw:
            return ["-f", raw[self.codec], "-ar", str(self.sample_rate), "-ac", "1"]
        return []


def _build() -> dict[str, OutputFormat]:
    table: dict[str, OutputFormat] = {}
    for rate, kbps in ((22050, 32), (24000, 48), (44100, 32), (44100, 64), (44100, 96), (44100, 128), (44100, 192)):
        name = f"mp3_{rate}_{kbps}"
        table[name] = OutputFormat(name, "mp3", rate, kbps, "audio/mpeg", "mp3")
    for rate in (8000, 16000, 22050, 24000, 32000, 44100, 48000):
        name = f"pcm_{rate}"
        table[name] = OutputFormat(name, "pcm", rate, None, "audio/pcm", "pcm")
    table["ulaw_8000"] = OutputFormat("ulaw_8000", "ulaw", 8000, None, "audio/basic", "ulaw")
    table["alaw_8000"] = OutputFormat("alaw_8000", "alaw", 8000, None, "audio/alaw", "alaw")
    for kbps in (32, 64, 96, 128, 192):
        name = f"opus_48000_{kbps}"
        table[name] = OutputFormat(name, "opus", 48000, kbps, "audio/ogg", "opus")
    return table


#: every output format the API accepts, by name
OUTPUT_FORMATS: dict[str, OutputFormat] = _build()
