"""A loopback TCP forwarder, so a drill can take an endpoint away and bring it back on the same port.

moto's S3 server keeps its data in process memory: restarting it would empty every bucket. The chaos drill puts this
proxy in front of it instead and SIGKILLs the proxy: the port stops accepting, open connections are reset (the
kernel closes them with the process), the data behind it survives, and a new proxy takes the same port again.

    python -m bench.tcp_proxy --listen 40001 --target 40002
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

LOOPBACK = "127.0.0.1"
CHUNK_BYTES = 64 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK_BYTES):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _handle(target_port: int, client_reader: asyncio.StreamReader,
                  client_writer: asyncio.StreamWriter) -> None:
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(LOOPBACK, target_port)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))


async def serve(listen_port: int, target_port: int) -> None:
    """Forward every connection to ``listen_port`` on loopback to ``target_port``, until cancelled or killed."""
    server = await asyncio.start_server(lambda r, w: _handle(target_port, r, w), LOOPBACK, listen_port,
                                        reuse_address=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=int, required=True, help="port to accept on (127.0.0.1)")
    parser.add_argument("--target", type=int, required=True, help="port to forward to (127.0.0.1)")
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.target))


if __name__ == "__main__":
    main()
