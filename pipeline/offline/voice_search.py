"""``GET /v2/voices``: the account's voices filtered, sorted and cut into pages.

Filters: ``voice_ids`` (repeated, at most 100; ids the account lacks are simply absent), ``search`` (case-insensitive,
in name, description, label values and category), ``category``, ``voice_type`` (``default`` = premade, ``personal``,
``workspace`` and ``non-default`` = the rest, ``community`` = none). Order: the catalog's (built-ins first) unless
``sort`` is ``name`` (ascending by default) or ``created_at_unix`` (descending by default). A page is at most
``page_size`` (1 to 100, default 10) voices; ``next_page_token`` is opaque to clients (the offset of the next page).
Invalid values are answered 422 with the FastAPI list shape, ``loc: ["query", name]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.datastructures import QueryParams

from pipeline.formats import MAX_VOICE_IDS_PER_REQUEST, MAX_VOICES_PAGE_SIZE
from pipeline.offline.problems import Invalid, problem_item
from pipeline.offline.voices import Voice


class VoiceQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    next_page_token: str | None = None
    page_size: int = Field(default=10, ge=1, le=MAX_VOICES_PAGE_SIZE)
    search: str | None = None
    sort: Literal["created_at_unix", "name"] | None = None
    sort_direction: Literal["asc", "desc"] | None = None
    voice_type: Literal["personal", "community", "default", "workspace", "non-default"] | None = None
    category: str | None = None
    include_total_count: bool = True
    voice_ids: list[str] | None = Field(default=None, max_length=MAX_VOICE_IDS_PER_REQUEST)

    @field_validator("next_page_token")
    @classmethod
    def _offset(cls, value: str | None) -> str | None:
        if value is not None and not value.isdigit():
            raise ValueError("not a page token this server handed out")
        return value


def parse_query(params: QueryParams) -> VoiceQuery:
    raw: dict[str, Any] = {key: value for key, value in params.items() if value != "" and key != "voice_ids"}
    if "voice_ids" in params:
        raw["voice_ids"] = [value for value in params.getlist("voice_ids") if value]
    try:
        return VoiceQuery.model_validate(raw)
    except ValidationError as error:
        raise Invalid([problem_item(("query", *map(str, item["loc"])), item["msg"], kind=item["type"],
                                    value=item.get("input"))
                       for item in error.errors(include_url=False, include_context=False)]) from error


def _matches(voice: Voice, query: VoiceQuery, wanted: set[str] | None) -> bool:
    if wanted is not None and voice.voice_id not in wanted:
        return False
    if query.category and voice.category != query.category:
        return False
    if query.voice_type == "community" or (query.voice_type == "default" and voice.category != "premade"):
        return False
    if query.voice_type in ("personal", "workspace", "non-default") and voice.category == "premade":
        return False
    if query.search:
        haystack = " ".join([voice.name, voice.description, voice.category, *voice.labels.values()]).lower()
        return query.search.lower() in haystack
    return True


def search(voices: Sequence[Voice], query: VoiceQuery) -> dict[str, Any]:
    """The body of ``GET /v2/voices`` (``GetVoicesV2ResponseModel``)."""
    wanted = set(query.voice_ids) if query.voice_ids is not None else None
    found = [voice for voice in voices if _matches(voice, query, wanted)]
    if query.sort == "name":
        found.sort(key=lambda voice: voice.name.lower(), reverse=query.sort_direction == "desc")
    elif query.sort == "created_at_unix":
        found.sort(key=lambda voice: voice.created_at_unix, reverse=query.sort_direction != "asc")
    start = int(query.next_page_token or 0)
    end = start + query.page_size
    has_more = end < len(found)
    return {"voices": [voice.to_api() for voice in found[start:end]], "has_more": has_more,
            "total_count": len(found), "next_page_token": str(end) if has_more else None}
