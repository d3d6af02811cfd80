"""A tiny authoritative DNS server for the egress smoke scenario: answers A queries for
the names given on the command line (NAME=IP ...), NXDOMAIN for everything else.

Usage: tiny_dns.py LISTEN_IP NAME=IP [NAME=IP ...]   (UDP port 53, runs until killed)
"""
import socket
import struct
import sys


def answer(query: bytes, table: dict) -> bytes:
    ident, _flags, qdcount = struct.unpack("!HHH", query[:6])
    if qdcount != 1:
        return b""
    i, labels = 12, []
    while query[i]:
        n = query[i]
        labels.append(query[i + 1 : i + 1 + n].decode("ascii", "replace").lower())
        i += 1 + n
    question = query[12 : i + 5]
    qtype = struct.unpack("!H", query[i + 1 : i + 3])[0]
    name = ".".join(labels)
    ip = table.get(name)
    if ip is None:
        return struct.pack("!HHHHHH", ident, 0x8183, 1, 0, 0, 0) + question
    if qtype != 1:
        return struct.pack("!HHHHHH", ident, 0x8180, 1, 0, 0, 0) + question
    record = struct.pack("!HHHLH", 0xC00C, 1, 1, 30, 4) + socket.inet_aton(ip)
    return struct.pack("!HHHHHH", ident, 0x8180, 1, 1, 0, 0) + question + record


def main() -> None:
    listen = sys.argv[1]
    table = dict(arg.split("=", 1) for arg in sys.argv[2:])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((listen, 53))
    while True:
        query, peer = sock.recvfrom(512)
        try:
            reply = answer(query, table)
        except (IndexError, struct.error):
            continue
        if reply:
            sock.sendto(reply, peer)


if __name__ == "__main__":
    main()
