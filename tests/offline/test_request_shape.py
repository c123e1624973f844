"""The speech-to-speech requests the vendor's SDK and the pipeline's client send, caught in a mock transport and
checked against the vendor's request schema: multipart fields and their types, query parameters, the key header."""

from __future__ import annotations

import email.parser
import email.policy
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from elevenlabs.client import ElevenLabs

from pipeline.api.client import StsClient
from pipeline.manifest.job import Job, VoiceSettings
from tests.offline.spec import coerce, form_errors, operation, validator

VOICE = "AxUN8DXFT6JYQPLTV7j9"
AUDIO = b"RIFF" + bytes(100)


def multipart_fields(request: httpx.Request) -> dict[str, Any]:
    """name -> text value, or the bytes of a part sent as a file."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.content)
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        fields[name] = payload if part.get_filename() is not None else payload.decode()
    return fields


class Recorder:
    """A transport that answers every request with a little audio and keeps the requests."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return httpx.Response(200, content=b"\xff\xfb" * 64, headers={"content-type": "audio/mpeg",
                                                                      "request-id": "0" * 32})


def spec_path(url_path: str) -> str:
    """The spec's path for a request: voice-changer is the newer name of the same endpoints."""
    path = url_path.replace("/v1/voice-changer/", "/v1/speech-to-speech/").replace(VOICE, "{voice_id}")
    assert path in ("/v1/speech-to-speech/{voice_id}", "/v1/speech-to-speech/{voice_id}/stream"), url_path
    return path


def query_errors(path: str, query: httpx.QueryParams) -> list[str]:
    declared = {p["name"]: p["schema"] for p in operation(path, "post")["parameters"] if p["in"] == "query"}
    problems = [f"{name}: not a query parameter of the spec" for name in query if name not in declared]
    for name, value in query.items():
        if name in declared:
            typed = coerce(value, declared[name])
            problems += [f"{name}: {e.message}" for e in validator(declared[name]).iter_errors(typed)]
    return problems


def check(request: httpx.Request) -> dict[str, Any]:
    path = spec_path(request.url.path)
    fields = multipart_fields(request)
    assert isinstance(fields.get("audio"), bytes), "audio must travel as a file part"
    assert form_errors(path, fields) == []
    assert query_errors(path, request.url.params) == []
    assert request.headers["xi-api-key"] == "k"
    return fields


def test_the_vendor_sdk_sends_what_the_spec_describes() -> None:
    recorder = Recorder()
    client = ElevenLabs(api_key="k", base_url="http://sts.test", httpx_client=httpx.Client(
        transport=httpx.MockTransport(recorder)))
    b"".join(client.speech_to_speech.stream(
        voice_id=VOICE, audio=("in.wav", AUDIO, "audio/wav"), output_format="pcm_16000",
        model_id="eleven_multilingual_sts_v2", seed=9, remove_background_noise=True, file_format="other",
        voice_settings='{"stability": 0.4}', optimize_streaming_latency=2, enable_logging=False))
    b"".join(client.speech_to_speech.convert(voice_id=VOICE, audio=io.BytesIO(AUDIO)))
    streamed, whole = (check(request) for request in recorder.requests)
    assert streamed == {"audio": AUDIO, "model_id": "eleven_multilingual_sts_v2", "seed": "9",
                        "remove_background_noise": "true", "file_format": "other",
                        "voice_settings": '{"stability": 0.4}'}
    assert whole == {"audio": AUDIO}
    assert dict(recorder.requests[0].url.params) == {"output_format": "pcm_16000", "optimize_streaming_latency": "2",
                                                     "enable_logging": "false"}


def test_the_pipeline_client_sends_what_the_spec_describes(tmp_path: Path) -> None:
    recorder = Recorder()
    source = tmp_path / "in.wav"
    source.write_bytes(AUDIO)
    job = Job(input="s3://in-bucket/a.wav", output="s3://out-bucket/a.pcm", voice_id=VOICE,
              model_id="eleven_multilingual_sts_v2", seed=4294967295,
              voice_settings=VoiceSettings(stability=0.3, speed=1.1), file_format="other",
              output_format="pcm_16000", enable_logging=False, optimize_streaming_latency=1)
    with StsClient("http://sts.test", "k", transport=httpx.MockTransport(recorder)) as client:
        client.stream(job, source, tmp_path / "out.pcm", audio_content_type="audio/wav")
        client.stream(Job(input="s3://in-bucket/b.wav", voice_id=VOICE), source, tmp_path / "out.mp3")
    detailed, plain = (check(request) for request in recorder.requests)
    assert detailed["seed"] == "4294967295" and detailed["remove_background_noise"] == "false"
    assert plain == {"audio": AUDIO, "model_id": "eleven_english_sts_v2", "file_format": "other",
                     "remove_background_noise": "false"}


@pytest.mark.parametrize("fields, problem", [
    ({"model_id": "m"}, "'audio' is a required property"),
    ({"audio": b"x", "seed": "nine"}, "seed"),
    ({"audio": b"x", "remove_background_noise": "yes"}, "remove_background_noise"),
    ({"audio": b"x", "file_format": "flac"}, "file_format"),
    ({"audio": b"x", "speed": "1.1"}, "speed: not a field of the request schema"),
])
def test_the_request_check_catches_a_wrong_form(fields: dict[str, Any], problem: str) -> None:
    errors = form_errors("/v1/speech-to-speech/{voice_id}/stream", fields)
    assert any(problem in error for error in errors), errors
