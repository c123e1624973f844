"""The dataset card (``README.md``) of an export: what it holds, how it was made and how to load it.

It is made from the export's state (``export.json``), so an appended night updates the counts without reading a
single shard back.
"""

from __future__ import annotations

from typing import Any

__all__ = ["render_card"]

_LOADERS = {
    "hf": ('from datasets import load_dataset\n'
           'ds = load_dataset("parquet", data_files="data/*.parquet")["train"]\n'
           '# ds.features: source_audio and converted_audio are Audio columns'),
    "webdataset": ('import webdataset as wds\n'
                   'for sample in wds.WebDataset("shard-{00000..NNNNN}.tar"):\n'
                   '    sample["src.wav"], sample["tgt.mp3"], sample["json"]'),
    "nemo": ('import json\n'
             'rows = [json.loads(line) for line in open("manifest.jsonl")]\n'
             '# input_filepath / target_filepath are relative to the manifest'),
}


def render_card(state: dict[str, Any]) -> str:
    """The card's Markdown; for ``hf`` with the YAML front matter the Hub reads (the Parquet files, one split)."""
    fmt = str(state["format"])
    voices = state.get("voices") or {}
    front = ("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/*.parquet\n"
             "---\n\n") if fmt == "hf" else ""
    lines = [
        f"{front}# Voice conversion dataset", "",
        "Pairs of (source, converted) recordings made by sts-pipeline, with each conversion's provenance: "
        "voice, model, seed, voice settings, durations, loudness, request ids, credits and SHA-256 of both files.",
        "", "| | |", "| --- | --- |",
        f"| format | `{fmt}` |", f"| rows | {state.get('rows', 0):,} |",
        f"| source audio | {state.get('source_seconds', 0.0) / 3600:.3f} h |",
        f"| converted audio | {state.get('converted_seconds', 0.0) / 3600:.3f} h |",
        f"| voices | {len(voices)} |", f"| runs | {', '.join(state.get('runs') or [])} |",
        "", "## Voices", "", "| voice_id | rows |", "| --- | --- |",
        *(f"| `{voice}` | {count:,} |" for voice, count in sorted(voices.items())),
        "", "## How it was made", "", "```sh", *state.get("commands", []), "```",
        "", "## Loading it", "", "```python", _LOADERS[fmt], "```", "",
    ]
    return "\n".join(lines)
