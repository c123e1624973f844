"""The vendor's published contract, as facts both the client and the offline server use (no dependencies).

- The service's 21 output formats: codec, sample rate, bitrate, Content-Type, file extension, how ffmpeg reads them.
- The speech-to-speech models, the seed range, the per-request limits and the billing rate.
- The plans (tiers): their concurrency caps, monthly credits and the output formats they gate.

Sources: ``../shared/api/speech-to-speech.md`` and the vendor's OpenAPI description (a copy is in
``tests/offline/vendor-openapi-subset.json``).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_OUTPUT_FORMAT = "mp3_44100_128"
FILE_FORMATS = ("pcm_s16le_16", "other")
PCM_S16LE_16_RATE = 16000

#: the models that can do voice conversion today; the account's ``GET /v1/models`` is the authority
STS_MODEL_IDS = ("eleven_english_sts_v2", "eleven_multilingual_sts_v2")
#: what the service uses when a request sends no ``model_id``
DEFAULT_MODEL_ID = "eleven_english_sts_v2"
#: the one the vendor recommends, even for English
RECOMMENDED_MODEL_ID = "eleven_multilingual_sts_v2"
#: ``seed`` is an integer from 0 to this
MAX_SEED = 4294967295

#: per-request limits: longer or larger inputs are answered 400 (``audio_too_long`` / ``request_too_large``)
MAX_INPUT_SECONDS = 300.0
MAX_INPUT_BYTES = 50 * 1024 * 1024
#: billing is by input duration
CREDITS_PER_MINUTE = 1000
CREDITS_PER_SECOND = CREDITS_PER_MINUTE / 60.0

#: ``GET /v2/voices``: at most this many voices a page, and at most this many ``voice_ids`` a request
MAX_VOICES_PAGE_SIZE = 100
MAX_VOICE_IDS_PER_REQUEST = 100


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


@dataclass(frozen=True)
class Tier:
    """One subscription plan. ``rank`` orders them; ``api_name`` is what ``GET /v1/user/subscription`` calls it."""

    name: str
    rank: int
    concurrency: int  # published cap on concurrent requests for the non-Flash models (speech-to-speech among them)
    monthly_credits: int
    api_name: str


#: the plans, cheapest first. ``api_name`` follows the tier identifiers of the vendor's OpenAPI description
#: (``PendingSubscriptionSwitchResponseModel.next_tier``); monthly credits are the vendor's published plan quotas.
TIERS: dict[str, Tier] = {tier.name: tier for tier in (
    Tier("free", 0, 2, 10_000, "free"),
    Tier("starter", 1, 3, 30_000, "starter"),
    Tier("creator", 2, 5, 100_000, "creator"),
    Tier("pro", 3, 10, 500_000, "pro"),
    Tier("scale", 4, 15, 2_000_000, "scale_2024_08_10"),
    Tier("business", 5, 15, 11_000_000, "growing_business"),
)}

#: output formats a plan below the named tier cannot use (the service answers 403 ``output_format_not_allowed``)
FORMAT_MIN_TIER: dict[str, str] = {"mp3_44100_192": "creator", "pcm_44100": "pro"}


def tier_named(name: str) -> Tier | None:
    """The tier called ``name``, by our name (``scale``) or the service's (``scale_2024_08_10``)."""
    return TIERS.get(name) or next((tier for tier in TIERS.values() if tier.api_name == name), None)


def format_allowed(output_format: str, tier: str) -> bool:
    """Whether a plan of ``tier`` may ask for ``output_format`` (unknown formats are not this function's business)."""
    needed = FORMAT_MIN_TIER.get(output_format)
    plan = tier_named(tier)
    return needed is None or (plan is not None and plan.rank >= TIERS[needed].rank)
