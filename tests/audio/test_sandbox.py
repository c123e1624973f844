"""ffmpeg is a sandboxed decoder: what an input says is never followed.

Each hostile input goes through what the worker runs (``probe``, ``check_limits``, ``prepare``) into a work
directory, and the tests look at what came out: the error, the files written, the command lines started, the
requests a loopback HTTP server received, and the processes left behind.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from pipeline.audio import ffmpeg
from pipeline.audio.decode import pcm_stream
from pipeline.audio.prepare import prepare
from pipeline.audio.probe import check_limits, probe
from pipeline.errors import InputError
from tests.audio.helpers import SECONDS, CountingServer, media_children, record_argvs
from tests.audio.helpers import ffmpeg as make

MAX_BYTES = 10**9
MAX_SECONDS = 3600.0
#: the demuxers ffmpeg may be told to use: audio containers, and raw formats a caller declares
ALLOWED_DEMUXERS = ("wav", "w64", "flac", "mp3", "aac", "ogg", "mov", "aiff", "caf", "s16le", "mulaw", "alaw", "f32le")


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recording on the worker's disk, outside any job's directory: what a playlist would have us read."""
    where = tmp_path_factory.mktemp("elsewhere") / "private-recording.mp3"
    make("-f", "lavfi", "-i", "sine=f=330:r=22050:d=2", "-c:a", "libmp3lame", "-metadata", "title=SECRET-TITLE",
         str(where))
    return where


def run_worker_steps(path: Path, workdir: Path, *, label: str, file_format: str = "other") -> Path:
    """What the worker does with a downloaded input before sending it: probe, limits, prepare."""
    info = probe(path, file_format="pcm_s16le_16" if path.suffix == ".pcm" else "other", label=label)
    check_limits(info, max_bytes=MAX_BYTES, max_seconds=MAX_SECONDS, label=label)
    return prepare(path, info, file_format, workdir, label=label)


def refused(path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch, *, label: str,
            file_format: str = "other") -> tuple[InputError, list[list[str]]]:
    """Run the worker's steps on a hostile input in a thread (bounded: the old code hung on some), expect a refusal."""
    seen = record_argvs(monkeypatch)
    outcome: list[BaseException | Path] = []
    worker = threading.Thread(target=lambda: outcome.append(_attempt(path, workdir, label, file_format)), daemon=True)
    worker.start()
    worker.join(20)
    assert not worker.is_alive(), "the input kept the decoder busy"
    assert isinstance(outcome[0], InputError), f"the input was accepted: {outcome[0]!r}"
    return outcome[0], seen


def _attempt(path: Path, workdir: Path, label: str, file_format: str) -> BaseException | Path:
    try:
        return run_worker_steps(path, workdir, label=label, file_format=file_format)
    except Exception as error:  # noqa: BLE001 — handed back to the test thread
        return error


def nothing_of(secret: Path, workdir: Path, error: InputError) -> None:
    """Neither the secret's bytes nor its name reached the work directory or the message."""
    payload = secret.read_bytes()[-2000:]
    for written in workdir.iterdir():
        assert payload not in written.read_bytes(), written.name
        assert b"SECRET-TITLE" not in written.read_bytes(), written.name
    assert secret.name not in error.message and str(secret.parent) not in error.message


def test_an_hls_playlist_naming_a_local_file_is_not_audio_and_nothing_is_read(secret: Path, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    playlist = tmp_path / "input.wav"  # the job names its download after the key's suffix
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{secret}\n#EXT-X-ENDLIST\n")
    for file_format in ("other", "pcm_s16le_16"):
        error, seen = refused(playlist, tmp_path, monkeypatch, label="s3://in/episode.wav", file_format=file_format)
        assert error.reason == "not_audio"
        assert "is a playlist or a list of other inputs (hls)" in error.message
        assert seen == []  # refused by its first bytes: no ffmpeg or ffprobe was started at all
        assert sorted(p.name for p in tmp_path.iterdir()) == ["input.wav"]
        nothing_of(secret, tmp_path, error)


def test_an_hls_playlist_declared_raw_pcm_is_refused_too(secret: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    playlist = tmp_path / "input.pcm"
    playlist.write_text(f"#EXTM3U\n#EXTINF:2.0,\n{secret}\n")
    error, seen = refused(playlist, tmp_path, monkeypatch, label="s3://in/episode.pcm", file_format="pcm_s16le_16")
    assert error.reason == "not_audio" and seen == []
    nothing_of(secret, tmp_path, error)


def test_an_hls_playlist_naming_a_url_makes_no_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with CountingServer() as server:
        playlist = tmp_path / "input.mp3"
        playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{server.url}/segment-0.mp3\n"
                            f"#EXT-X-ENDLIST\n")
        error, seen = refused(playlist, tmp_path, monkeypatch, label="s3://in/feed.mp3")
        time.sleep(0.2)
        assert server.requests == []
    assert error.reason == "not_audio" and seen == []
    assert str(server.port) not in error.message


def test_a_live_playlist_ends_at_once_and_leaves_no_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with CountingServer() as server:
        live = tmp_path / "input.m3u8"  # no #EXT-X-ENDLIST: a player would reload it for ever
        live.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:1.0,\n"
                        f"{server.url}/live-7.mp3\n")
        started = time.monotonic()
        error, seen = refused(live, tmp_path, monkeypatch, label="s3://in/live.m3u8")
        assert time.monotonic() - started < 5
        assert server.requests == []
    assert error.reason == "not_audio" and seen == []
    assert media_children() == []


def test_an_ffconcat_list_is_not_audio_and_its_files_are_not_read(secret: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    neighbour = tmp_path / "neighbour.mp3"  # what concat's "safe" mode still allows: a file beside the list
    neighbour.write_bytes(secret.read_bytes())
    for text in (f"ffconcat version 1.0\nfile {neighbour.name}\n", f"ffconcat version 1.0\nfile '{secret}'\n"):
        listing = tmp_path / "input.wav"
        listing.write_text(text)
        error, seen = refused(listing, tmp_path, monkeypatch, label="s3://in/list.wav")
        assert error.reason == "not_audio" and "(concat)" in error.message
        assert seen == []
        assert sorted(p.name for p in tmp_path.iterdir()) == ["input.wav", "neighbour.mp3"]


@pytest.mark.parametrize("text", [
    "{url}/a.mp3\n{url}/b.mp3\n",  # a bare list of URLs (.m3u without a header)
    "[playlist]\nFile1={url}/stream\nLength1=-1\n",  # PLS
    "file:{secret}\n",
    "{secret}\n",
])
def test_text_naming_urls_or_files_is_refused_whatever_it_is_declared(text: str, secret: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    with CountingServer() as server:
        for suffix, file_format in ((".mp3", "other"), (".pcm", "pcm_s16le_16")):
            listing = tmp_path / f"input{suffix}"
            listing.write_text(text.format(url=server.url, secret=secret))
            error, seen = refused(listing, tmp_path, monkeypatch, label=f"s3://in/list{suffix}",
                                  file_format=file_format)
            assert error.reason == "not_audio" and seen == []
            listing.unlink()
        assert server.requests == []


def test_a_quicktime_reference_is_opened_with_data_references_off(files: dict[str, Path], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    m4a = tmp_path / "input.m4a"
    make("-i", str(files["wav"]), "-c:a", "aac", str(m4a))
    seen = record_argvs(monkeypatch)
    info = probe(m4a)
    assert info.codec == "aac" and abs(info.duration_s - SECONDS) < 0.1
    assert seen and all(argv[argv.index("-f") + 1] == "mov" for argv in seen)
    assert all(argv[argv.index("-enable_drefs") + 1] == "0" for argv in seen)


def test_every_command_line_is_fenced(files: dict[str, Path], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    seen = record_argvs(monkeypatch)
    for name in ("wav", "mp3", "flac", "six"):
        info = probe(files[name])
        check_limits(info, max_bytes=MAX_BYTES, max_seconds=MAX_SECONDS, label=name)
        prepare(files[name], info, "pcm_s16le_16", tmp_path)
    list(pcm_stream(files["pcm"], sample_rate=16000, input_args=ffmpeg.PCM_S16LE_16_INPUT_ARGS))
    assert len(seen) >= 6  # the WAV and FLAC headers are read in process (pipeline.audio.native): one ffprobe
    for argv in seen:
        assert argv.count("-i") == 1
        source = argv[argv.index("-i") + 1]
        before = argv[:argv.index("-i")]
        whitelist = before[before.index("-protocol_whitelist") + 1]
        demuxer = before[before.index("-f") + 1]
        assert before[before.index("-format_whitelist") + 1] == demuxer
        assert demuxer in ALLOWED_DEMUXERS
        assert (whitelist, source.startswith("file:/")) == ("file", True)
        assert Path(source.removeprefix("file:")).is_relative_to(files["wav"].parent)
        assert not any("://" in arg for arg in argv)
        if argv[0] == ffmpeg.FFMPEG:
            assert "-nostdin" in argv


def test_only_regular_files_reach_the_decoder(files: dict[str, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    seen = record_argvs(monkeypatch)
    link = tmp_path / "input.wav"
    link.symlink_to(files["wav"])
    fifo = tmp_path / "input.fifo"
    os.mkfifo(fifo)
    for path in (link, fifo):
        with pytest.raises(InputError) as caught:
            list(pcm_stream(path, sample_rate=16000))
        assert caught.value.reason == "bad_input"
    with pytest.raises(TypeError):
        ffmpeg.check_input(str(files["wav"]))  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # the only input arguments a caller may give declare a raw format
        list(pcm_stream(files["wav"], sample_rate=16000, input_args=["-f", "hls"]))
    assert seen == []


def test_an_input_of_no_known_container_is_not_audio_before_ffmpeg(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    seen = record_argvs(monkeypatch)
    cases = {
        "mkv.wav": bytes.fromhex("1a45dfa3") + b"\x00" * 200,  # Matroska (video as well as audio)
        "ts.mp3": (b"\x47" + b"\x00" * 187) * 4,  # MPEG transport stream, as HLS segments are
        "html.mp3": b"<!doctype html><html><body>blocked</body></html>",
        "heic.m4a": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64,
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InputError) as caught:
            probe(path, label=f"s3://in/{name}")
        assert caught.value.reason == "not_audio", name
    assert seen == []


@pytest.mark.parametrize(("suffix", "args", "demuxer"), [
    ("wav", ["-c:a", "pcm_s16le"], "wav"), ("w64", ["-f", "w64"], "w64"), ("flac", [], "flac"),
    ("mp3", ["-c:a", "libmp3lame"], "mp3"), ("nometa.mp3", ["-c:a", "libmp3lame", "-id3v2_version", "0"], "mp3"),
    ("aac", ["-c:a", "aac", "-f", "adts"], "aac"), ("ogg", ["-c:a", "libvorbis"], "ogg"),
    ("opus", ["-c:a", "libopus"], "ogg"), ("m4a", ["-c:a", "aac"], "mov"), ("alac.m4a", ["-c:a", "alac"], "mov"),
    ("aiff", [], "aiff"), ("caf", [], "caf"),
])
def test_every_allowed_container_is_told_by_its_bytes_and_probed(files: dict[str, Path], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch, suffix: str,
                                                                 args: list[str], demuxer: str) -> None:
    made = tmp_path / f"speech.{suffix}"
    make("-i", str(files["wav"]), *args, str(made))
    named_wrong = tmp_path / "input.bin"  # the name says nothing: the bytes decide
    named_wrong.write_bytes(made.read_bytes())
    seen = record_argvs(monkeypatch)
    info = probe(named_wrong)
    check_limits(info, max_bytes=MAX_BYTES, max_seconds=MAX_SECONDS, label=suffix)
    prepare(named_wrong, info, "other", tmp_path)
    assert info.counted and abs(info.duration_s - SECONDS) < 0.1
    # a PCM WAV is probed and counted in process once its bytes say WAV (pipeline.audio.native): no command line
    assert {argv[argv.index("-f") + 1] for argv in seen} == (set() if demuxer == "wav" else {demuxer})
