"""A small podcast for tests: mp3 episodes with an ID3 title, cover art and 3 chapters, a feed, a loopback server."""

from __future__ import annotations

import http.server
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from xml.sax.saxutils import escape

from mutagen.id3 import APIC, CHAP, CTOC, ID3, TALB, TIT2, TPE1, CTOCFlags

from tests.support import write_input

CHAPTERS_MS = ((0, 1500), (1500, 3000), (3000, 4500))


def make_cover(path: Path) -> bytes:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=orange:s=32x32", "-frames:v", "1",
                    str(path)], check=True)
    return path.read_bytes()


def make_episode(path: Path, title: str, cover: bytes, *, seconds: float = 4.5, seed: int = 0) -> Path:
    """An mp3 of speech-like audio tagged the way podcast apps read it: title, artist, album, cover, chapters."""
    write_input(path, seconds, seed=seed)
    tags = ID3()
    tags.add(TIT2(encoding=3, text=[title]))
    tags.add(TPE1(encoding=3, text=["Field Notes"]))
    tags.add(TALB(encoding=3, text=["Field Notes (back catalog)"]))
    tags.add(APIC(encoding=3, mime="image/png", type=3, desc="cover", data=cover))
    ids = []
    for n, (start, end) in enumerate(CHAPTERS_MS):
        ids.append(f"ch{n}")
        tags.add(CHAP(element_id=f"ch{n}", start_time=start, end_time=end,
                      sub_frames=[TIT2(encoding=3, text=[f"Part {n + 1}"])]))
    tags.add(CTOC(element_id="toc", flags=CTOCFlags.TOP_LEVEL | CTOCFlags.ORDERED, child_element_ids=ids,
                  sub_frames=[TIT2(encoding=3, text=["Contents"])]))
    tags.save(path)
    return path


def rss(base: str, items: list[tuple[str, str, str, int, str]], *, title: str = "Field Notes",
        next_url: str | None = None) -> str:
    """An RSS 2.0 feed with iTunes tags; ``items`` are (guid, title, enclosure url, length, type)."""
    entries = "".join(
        f"<item><title>{escape(t)}</title><guid isPermaLink=\"false\">{escape(g)}</guid>"
        f"<pubDate>Mon, 0{n + 1} Jan 2024 10:00:00 GMT</pubDate><description>About {escape(t)} &lt;b&gt;!</description>"
        f"<itunes:episode>{n + 1}</itunes:episode><itunes:season>2</itunes:season><itunes:duration>4</itunes:duration>"
        f"<enclosure url=\"{escape(u)}\" length=\"{length}\" type=\"{mime}\"/></item>"
        for n, (g, t, u, length, mime) in enumerate(items))
    paging = f'<atom:link rel="next" href="{escape(next_url)}"/>' if next_url else ""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0" '
            'xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd" xmlns:atom="http://www.w3.org/2005/Atom">'
            f"<channel><title>{escape(title)}</title><link>{escape(base)}</link><description>A show</description>"
            f"<language>en</language><itunes:author>Field Notes</itunes:author>{paging}{entries}</channel></rss>\n")


class _Handler(http.server.SimpleHTTPRequestHandler):
    redirects: dict[str, str] = {}
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        self.hits.append(f"GET {self.path}")
        if self.path in self.redirects:
            self.send_response(302)
            self.send_header("Location", self.redirects[self.path])
            self.end_headers()
            return
        super().do_GET()

    def do_HEAD(self) -> None:  # noqa: N802
        self.hits.append(f"HEAD {self.path}")
        super().do_HEAD()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serve(root: Path, redirects: dict[str, str] | None = None) -> Iterator[tuple[str, list[str]]]:
    """Serve ``root`` on 127.0.0.1 (a free port, a thread): yields the base URL and the list of requests seen."""
    hits: list[str] = []
    handler = type("Handler", (_Handler,), {"redirects": dict(redirects or {}), "hits": hits,
                                            "__init__": lambda self, *a, **k: _Handler.__init__(self, *a,
                                                                                                directory=str(root),
                                                                                                **k)})
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
