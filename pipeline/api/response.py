"""A 200 is not trusted: the body must be audio of the requested format, of about the expected length, in time.

``BodyGuard`` watches a response body as it arrives and raises ``ResponseFault`` (the client turns it into a
``TransientError`` with the fault's reason) on the first sign that it is not what was asked for:

- **wrong_format**: the first bytes do not start the requested container or codec (checked as soon as enough bytes
  arrived, before the rest is read). mp3: an ID3v2 tag or an MPEG audio frame header (its sample rate, when
  readable, must be the format's). opus: an Ogg page (``OggS``) holding ``OpusHead``. pcm, μ-law and A-law have no
  header, so only what is clearly something else is refused: another container's signature (RIFF/WAV, ID3, Ogg,
  FLAC, MP4, Matroska…) or a text page (HTML, XML, JSON). A ``Content-Type`` of text or JSON is refused for every
  format, and a pcm body of an odd number of bytes is not 16-bit samples.
- **oversized_response**: more bytes than the expected output duration can take at the format's bitrate, with a
  generous margin (``byte_bound``): a body that never ends stops here, not at the disk's end.
- **deadline**: the whole request (upload, wait, download) ran past its deadline (``request_deadline_s``), which
  grows with the input's duration. The per-read timeout only bounds the gap between two bytes; a body that trickles
  a byte every few seconds ends here.

A body that passes is still decoded whole after the request (``pipeline.conversion.calls``), so a body that
starts right and goes wrong later is caught there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pipeline.formats import MAX_INPUT_SECONDS, OutputFormat
from pipeline.reasons import Reason

__all__ = [
    "DEADLINE_BASE_S",
    "DEADLINE_PER_INPUT_S",
    "DEADLINE_PER_MB_S",
    "BodyGuard",
    "ResponseFault",
    "byte_bound",
    "bytes_per_second",
    "request_deadline_s",
    "sniff",
]

#: bytes looked at before the format is judged (a shorter body is judged at its end)
SNIFF_BYTES = 64
#: the byte bound allows this many times the expected duration, plus a fixed allowance of seconds and bytes
BOUND_DURATION_FACTOR = 2.0
BOUND_EXTRA_S = 10.0
BOUND_EXTRA_BYTES = 64 * 1024
#: the longest output the service can send for one request: its 5-minute input limit at the slowest speed (0.7)
LONGEST_OUTPUT_S = MAX_INPUT_SECONDS / 0.7
#: a request's deadline: a fixed part (queueing, first byte), a part per second of input audio (the conversion and
#: the download; the service converts faster than real time, this allows it to be twice slower than real time), and
#: a part per MB uploaded
DEADLINE_BASE_S = 60.0
DEADLINE_PER_INPUT_S = 2.0
DEADLINE_PER_MB_S = 1.0
#: the sample rates of MPEG audio by version bits (00 = 2.5, 10 = 2, 11 = 1) and rate index
_MPEG_RATES = {0b00: (11025, 12000, 8000), 0b10: (22050, 24000, 16000), 0b11: (44100, 48000, 32000)}
#: signatures of containers a headerless body must not start with
_CONTAINERS = ((b"RIFF", "a RIFF/WAV file"), (b"RIFX", "a RIFF/WAV file"), (b"RF64", "an RF64/WAV file"),
               (b"ID3", "an ID3-tagged file (mp3)"), (b"OggS", "an Ogg file"), (b"fLaC", "a FLAC file"),
               (b"FORM", "an AIFF file"), (b"\x1aE\xdf\xa3", "a Matroska/WebM file"), (b"%PDF", "a PDF"),
               (b"\x1f\x8b", "a gzip stream"), (b"PK\x03\x04", "a ZIP file"))
_TEXT_TYPES = ("text/", "application/json", "application/problem+json", "application/xml", "application/xhtml")


class ResponseFault(Exception):
    """A 200 that is not the audio asked for; ``reason`` is wrong_format, oversized_response or deadline."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason.value
        self.message = message


def bytes_per_second(fmt: OutputFormat) -> float:
    """The format's nominal data rate: 16-bit samples for pcm, one byte a sample for G.711, the bitrate otherwise."""
    if fmt.codec == "pcm":
        return 2.0 * fmt.sample_rate
    if fmt.codec in ("ulaw", "alaw"):
        return float(fmt.sample_rate)
    return (fmt.bitrate_kbps or 320) * 1000 / 8


def byte_bound(fmt: OutputFormat, expected_output_s: float | None) -> int:
    """The most bytes a body of ``expected_output_s`` seconds in ``fmt`` may have (unknown length: the longest the
    service can send for one request)."""
    seconds = LONGEST_OUTPUT_S if expected_output_s is None or expected_output_s <= 0 else expected_output_s
    return int((seconds * BOUND_DURATION_FACTOR + BOUND_EXTRA_S) * bytes_per_second(fmt)) + BOUND_EXTRA_BYTES


def request_deadline_s(input_s: float | None, upload_bytes: int = 0, *, base_s: float = DEADLINE_BASE_S,
                       per_input_s: float = DEADLINE_PER_INPUT_S, per_mb_s: float = DEADLINE_PER_MB_S) -> float:
    """Seconds one request may take from its start to its last byte (unknown input length: the vendor's limit)."""
    seconds = MAX_INPUT_SECONDS if input_s is None or input_s <= 0 else input_s
    return base_s + per_input_s * seconds + per_mb_s * max(0, upload_bytes) / 1e6


def _text_page(head: bytes) -> str | None:
    """What a text body is (an HTML page, JSON, …) if ``head`` starts like one and is all text; else None."""
    stripped = head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    if not stripped[:1] or stripped[:1] not in b"<{[":
        return None
    try:
        text = stripped.decode("utf-8")
    except UnicodeDecodeError as error:  # a multi-byte character cut at the sniff boundary is still text
        if error.start < len(stripped) - 3:
            return None
        text = stripped[:error.start].decode("utf-8")
    if any(ord(ch) < 0x20 and ch not in "\t\r\n" for ch in text):
        return None
    if text.startswith("<"):
        lowered = text[:20].lower()
        return "an XML document" if lowered.startswith("<?xml") else "an HTML page"
    return "JSON text"


def _mpeg_frame(head: bytes) -> tuple[bool, int | None]:
    """Whether ``head`` starts with an MPEG audio frame header (sync word, a version and a layer that are not
    reserved), and the frame's sample rate when its rate index is readable."""
    if len(head) < 3 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False, None
    version, layer = (head[1] >> 3) & 0b11, (head[1] >> 1) & 0b11
    if version == 0b01 or layer == 0b00:
        return False, None
    rate_index = (head[2] >> 2) & 0b11
    return True, None if rate_index == 0b11 else _MPEG_RATES[version][rate_index]


def sniff(fmt: OutputFormat, head: bytes, content_type: str | None = None) -> str | None:
    """Why a body starting with ``head`` is not ``fmt`` (a sentence), or None if it may be."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind.startswith(_TEXT_TYPES):
        return f"the service answered 200 with Content-Type {kind}, not {fmt.name} audio"
    page = _text_page(head)
    if page is not None:
        return f"the service answered 200 with {page}, not {fmt.name} audio"
    if fmt.codec == "mp3":
        if head.startswith(b"ID3"):
            return None  # the tag's frames follow it; the decode after the request checks them
        framed, rate = _mpeg_frame(head)
        if not framed:
            return f"the service answered 200 with a body that is not mp3 (no ID3 tag or MPEG frame at its start), " \
                   f"for {fmt.name}"
        if rate is not None and rate != fmt.sample_rate:
            return f"the service answered 200 with mp3 at {rate} Hz for {fmt.name}"
        return None
    if fmt.codec == "opus":
        if not head.startswith(b"OggS"):
            return f"the service answered 200 with a body that is not Ogg (no OggS page at its start), for {fmt.name}"
        if b"OpusHead" not in head:
            return f"the service answered 200 with an Ogg stream that is not Opus (no OpusHead), for {fmt.name}"
        return None
    for signature, what in _CONTAINERS:
        if head.startswith(signature):
            return f"the service answered 200 with {what}, not headerless {fmt.name}"
    if head[4:8] == b"ftyp":
        return f"the service answered 200 with an MP4 file, not headerless {fmt.name}"
    return None


@dataclass
class BodyGuard:
    """Checks one 200 body chunk by chunk: call ``feed`` with each chunk as it arrives, ``finish`` at its end."""

    fmt: OutputFormat
    max_bytes: int
    deadline: float  # time.monotonic() by which the last byte must have arrived
    deadline_s: float  # the same, as a length (for the message)
    content_type: str | None = None
    received: int = 0
    _head: bytes = b""
    _judged: bool = False

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if not self._judged:
            self._head += chunk[:SNIFF_BYTES - len(self._head)]
            if len(self._head) >= SNIFF_BYTES:
                self._judge()
        if self.received > self.max_bytes:
            raise ResponseFault(Reason.OVERSIZED_RESPONSE,
                                f"the service sent more than {self.max_bytes} bytes for {self.fmt.name}, more than the "
                                "expected duration can take: the body was not read further")
        self.check_deadline()

    @property
    def judged(self) -> bool:
        """Whether the format was judged (and found right): the bytes so far may be kept."""
        return self._judged

    def check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise ResponseFault(Reason.DEADLINE,
                                f"the request ran past its deadline of {self.deadline_s:.0f} s (sized from the input's "
                                f"duration) after {self.received} bytes: the body was not read further")

    def finish(self) -> None:
        if not self._judged and self._head:
            self._judge()
        if self.fmt.codec == "pcm" and self.received % 2:
            raise ResponseFault(Reason.WRONG_FORMAT, f"the service answered 200 with {self.received} bytes, an odd "
                                f"number: not 16-bit {self.fmt.name} samples")

    def _judge(self) -> None:
        self._judged = True
        problem = sniff(self.fmt, self._head, self.content_type)
        if problem is not None:
            raise ResponseFault(Reason.WRONG_FORMAT, problem)
