"""Reference for "one loopback HTTP round trip": answers every HTTP request with a canned
V2 response, without parsing JSON or predicting (plain asyncio, one process).

The p50 that wrk measures against it at concurrency 1 is the cost of the load generator,
the kernel's loopback and one minimal Python event-loop turn: the "+ one loopback HTTP
round trip" of the issue's concurrency-1 target.
"""

import argparse
import asyncio

BODY = (
    b'{"model_name":"m","outputs":[{"name":"predict","shape":[1],"datatype":"INT64","data":[0]}]}'
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)


class Canned(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            length = 0
            i = head.find(b"content-length:")
            if i >= 0:
                j = head.find(b"\r\n", i)
                length = int(head[i + 15 : j if j >= 0 else len(head)])
            total = end + 4 + length
            if len(self.buf) < total:
                return
            self.buf = self.buf[total:]
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]


async def main(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Canned, host, port)
    async with server:
        await server.serve_forever()


ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--host", default="127.0.0.1")
args = ap.parse_args()
asyncio.run(main(args.host, args.port))
