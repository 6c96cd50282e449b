# An outside TLS client for the Switchboard tests: Python's ssl module
# (OpenSSL), trusting only the test CA. Prints one result line per mode.
# Usage: tls_client.py PORT CA_PEM MODE [NAME]
import hashlib
import json
import socket
import ssl
import struct
import sys

port, ca, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
raw = socket.create_connection(("127.0.0.1", port), timeout=30)
s = ctx.wrap_socket(raw, server_hostname="localhost")


def recv_exact(n):
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(min(n - len(out), 1 << 16))
        if not chunk:
            raise SystemExit("closed after %d of %d bytes" % (len(out), n))
        out += chunk
    return bytes(out)


def recv_line():
    out = bytearray()
    while not out.endswith(b"\n"):
        out += recv_exact(1)
    return out.decode()


if mode == "echo":
    payload = bytes(range(256)) * 512
    s.sendall(payload)
    got = recv_exact(len(payload))
    # Our close_notify, then the server's: unwrap returns only once the
    # server has answered with its own.
    s.unwrap()
    print("echo %d %s" % (len(got), got == payload))
elif mode == "upper":
    s.sendall("grüße über tls\n".encode())
    got = recv_exact(len("GRÜSSE ÜBER TLS\n".encode())).decode()
    s.unwrap()
    print("upper " + got, end="")
elif mode == "chat":
    welcome = recv_line()
    s.sendall(b"/nick py\n")
    nick = recv_line()
    s.sendall(b"/who\n")
    who = recv_line()
    print("chat " + "|".join(x.strip() for x in (welcome, nick, who)))
elif mode == "get":
    s.sendall(("get %s\n" % sys.argv[4]).encode())
    (length,) = struct.unpack("<i", recv_exact(4))
    header = json.loads(recv_exact(length))
    body = recv_exact(header["file_size"])
    md5 = hashlib.md5(body).hexdigest()
    print("get %d %s %s" % (len(body), md5, md5 == header["md5"]))
else:
    raise SystemExit("unknown mode " + mode)
