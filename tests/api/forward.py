"""A TCP to Unix socket forwarder for tests/api/schemathesis.sh: schemathesis speaks HTTP
over TCP only. Listens on 127.0.0.1 (a free port, printed on its first line) and relays
each connection to the daemon's socket, until killed.

usage: python3 tests/api/forward.py SOCKET
"""

import asyncio
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main(socket: str) -> None:
    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            daemon_r, daemon_w = await asyncio.open_unix_connection(socket)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, daemon_w), pipe(daemon_r, client_w))

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
