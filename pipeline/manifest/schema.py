"""The JSON Schema (draft 2020-12) of one manifest line, generated from the ``Job`` model.

The committed ``manifests/schema.json`` is this module's output; regenerate it with
``python -m pipeline.manifest.schema > manifests/schema.json``. The schema is for editors and other tools: it cannot
express every check the loader makes (S3 key rules, duplicate outputs, allowed buckets), so ``sts-pipeline validate``
stays the authority.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pipeline.formats import OUTPUT_FORMATS
from pipeline.manifest.job import _MODEL_ID, _VOICE_ID, Job
from pipeline.s3uri import _BUCKET

SCHEMA_ID = "https://sts-pipeline.invalid/manifests/schema.json"
_S3_URI_PATTERN = "^s3://" + _BUCKET.pattern.strip("^$") + "/[^/]"
# what the model checks in validators rather than in types, taken from the same rules so the schema cannot drift
_CHECKED_IN_CODE: dict[str, dict[str, Any]] = {
    "input": {"pattern": _S3_URI_PATTERN},
    "output": {"pattern": _S3_URI_PATTERN},
    "voice_id": {"pattern": _VOICE_ID.pattern},
    "model_id": {"pattern": _MODEL_ID.pattern},
    "output_format": {"enum": list(OUTPUT_FORMATS)},
}

#: what each field means, after the API reference; every field of the models must have one
DESCRIPTIONS: dict[str, str] = {
    "input": "The recording to convert, as s3://bucket/key. Any audio ffmpeg reads, or raw PCM with "
             "file_format pcm_s16le_16.",
    "output": "Where the converted audio is written, as s3://bucket/key; must differ from the input. Leave it out "
              "to derive <output prefix>/<job id>.<extension> from --output-prefix. May use the placeholders "
              "{stem} (the input's file name without extension), {id}, {voice_id}, {seed} and {ext}.",
    "voice_id": "The voice to convert into: 1-64 letters, digits, '_' or '-'.",
    "model_id": "A model that can do voice conversion (the account's GET /v1/models says which; validate --remote "
                "checks). The vendor recommends eleven_multilingual_sts_v2, even for English.",
    "seed": "Best-effort deterministic sampling: the same seed and request should give the same audio.",
    "voice_settings": "Overrides the voice's stored settings for this request; unset fields keep the stored value.",
    "remove_background_noise": "Run the service's audio isolation on the input first.",
    "file_format": "pcm_s16le_16: the input is raw 16-bit little-endian mono PCM at 16 kHz (lower latency); "
                   "other: any encoded audio.",
    "output_format": "codec_samplerate[_bitrate] of the output. pcm_* is headerless signed 16-bit little-endian "
                     "mono, ulaw_8000 and alaw_8000 headerless G.711. Some formats need a higher subscription tier "
                     "(mp3_44100_192: Creator; pcm_44100: Pro).",
    "enable_logging": "false selects zero-retention mode (no history; enterprise plans only).",
    "optimize_streaming_latency": "Deprecated latency/quality trade-off, 0 (best quality) to 4 (lowest latency).",
    "id": "Your own name for the job, kept in its provenance. Not sent to the service; not part of the job id.",
    "metadata": "Any JSON object kept with the job's provenance (titles, speakers, ...). Not sent to the service; "
                "not part of the job id.",
    "max_segment_seconds": "Convert inputs longer than this in segments of at most this many seconds and stitch "
                           "the outputs (the service takes at most 5 minutes a request). Unset: the pipeline's "
                           "setting.",
    "overwrite": "Replace an object already at the output that this pipeline did not write (no provenance record "
                 "beside it). Without it such a job fails output_exists and the object is left as it is. Not part "
                 "of the job id.",
    "copy_tags": "Copy the input's tags onto the output: title, artist, album, year, comments, cover art and "
                 "chapters (mp3: ID3 with CHAP/CTOC; opus: Vorbis comments and a picture), chapter times scaled by "
                 "voice_settings.speed. manifest from-feed sets it. Part of the job id when true.",
    "master": "Loudness mastering of the output, measured and corrected after conversion and re-encoded once in "
              "output_format, its duration kept exactly: \"podcast\" (-16 LUFS for stereo, -19 LUFS for mono, which "
              "every output of the service is; true peak -1 dBTP) or {\"lufs\": L, \"true_peak_db\": P}. The "
              "quality record keeps the loudness before and after. Part of the job id.",
    "master.lufs": "Integrated loudness to reach, in LUFS (-36 to -6).",
    "master.true_peak_db": "The true-peak ceiling, in dBTP (-9 to 0; default -1).",
    "voice_ids": "Instead of voice_id: several voices; the line becomes one job per voice (× seed). Name each "
                 "job's output with the placeholders {stem}, {id}, {voice_id}, {seed} and {ext} in output.",
    "seeds": "Instead of seed: several seeds; the line becomes one job per seed (× voice).",
    "voice_settings.stability": "Stability of the voice, 0-1.",
    "voice_settings.similarity_boost": "How closely the output should match the target voice, 0-1.",
    "voice_settings.style": "Style exaggeration, 0-1.",
    "voice_settings.use_speaker_boost": "Boost the similarity to the target speaker.",
    "voice_settings.speed": "Speaking speed, 0.7-1.2; 1.0 leaves it unchanged.",
}


def manifest_line_schema() -> dict[str, Any]:
    """The schema of one manifest line: ``Job.model_json_schema()`` without titles, nullable types folded,
    descriptions from the API reference, and the enums and patterns the model checks in code."""
    generated = Job.model_json_schema()
    properties = {name: _clean(spec, name) for name, spec in generated["properties"].items()}
    voice_settings = generated["$defs"]["VoiceSettings"]
    master_target = generated["$defs"]["MasterTarget"]
    properties.update(_fanout_properties(properties))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "sts-pipeline manifest line",
        "description": "One speech-to-speech job. A JSONL manifest holds one such object a line; a CSV manifest "
                       "has these names as columns.",
        "type": "object",
        "required": [name for name in generated["required"] if name != "voice_id"],
        # one voice_id or a list of voice_ids; a seed or a list of seeds, never both (pipeline.manifest.fanout)
        "oneOf": [{"required": ["voice_id"]}, {"required": ["voice_ids"]}],
        "not": {"required": ["seed", "seeds"]},
        "additionalProperties": False,
        "properties": properties,
        "$defs": {
            "VoiceSettings": {
                "description": voice_settings["description"],
                "type": "object",
                "additionalProperties": False,
                "properties": {name: _clean(spec, f"voice_settings.{name}")
                               for name, spec in voice_settings["properties"].items()},
            },
            "MasterTarget": {
                "description": master_target["description"],
                "type": "object",
                "additionalProperties": False,
                "required": master_target["required"],
                "properties": {name: _clean(spec, f"master.{name}")
                               for name, spec in master_target["properties"].items()},
            },
        },
    }


def _fanout_properties(properties: dict[str, Any]) -> dict[str, Any]:
    """``voice_ids`` and ``seeds``: non-empty lists of what ``voice_id`` and ``seed`` take, each item once."""
    voice = {key: value for key, value in properties["voice_id"].items() if key in ("type", "pattern")}
    seed = {key: value for key, value in properties["seed"].items() if key in ("minimum", "maximum")}
    return {
        "voice_ids": {"description": DESCRIPTIONS["voice_ids"], "type": "array", "items": voice,
                      "minItems": 1, "uniqueItems": True},
        "seeds": {"description": DESCRIPTIONS["seeds"], "type": "array", "items": {"type": "integer", **seed},
                  "minItems": 1, "uniqueItems": True},
    }


_KEY_ORDER = ["description", "type", "anyOf", "enum", "pattern", "minimum", "maximum", "maxLength", "default"]


def _clean(spec: dict[str, Any], name: str) -> dict[str, Any]:
    """Drop the title, fold ``anyOf: [X, null]`` into ``type: [X, "null"]``, order the keywords for reading."""
    spec = {key: value for key, value in spec.items() if key != "title"}
    variants = spec.get("anyOf", [])
    typed = [variant for variant in variants if variant != {"type": "null"}]
    if len(typed) == 1 and len(variants) == 2 and "type" in typed[0]:
        del spec["anyOf"]
        spec = {**typed[0], **spec, "type": [typed[0]["type"], "null"]}
    if spec.get("additionalProperties") is True:
        del spec["additionalProperties"]
    spec.update(_CHECKED_IN_CODE.get(name, {}), description=DESCRIPTIONS[name])
    return dict(sorted(spec.items(), key=lambda item: _KEY_ORDER.index(item[0])))


def render_schema() -> str:
    """The schema as the committed file holds it."""
    return json.dumps(manifest_line_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_schema())
