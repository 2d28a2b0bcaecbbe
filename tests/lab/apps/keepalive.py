"""A small HTTP/1.1 app server whose keep-alive sweep loses the race with the proxy.

Like gunicorn's gthread worker, it waits for the next request on an idle connection for
`--keep-alive` seconds, and a sweep closes connections whose timer fired. The sweep runs
`--sweep-lag` seconds after the timer (gunicorn's loop does other work first) and does not
look for a request that arrived in between: a proxy reusing the connection in that window has
its request unread in the receive queue when the app closes it, and the kernel answers with a
reset. nginx then logs `recv() failed (104: Connection reset by peer)` and answers a POST with
502 (it retries only idempotent requests on a fresh connection).

    keepalive.py --bind 127.0.0.1:PORT | --bind unix:PATH [--keep-alive S] [--sweep-lag S]
"""
import argparse
import os
import select
import socket
import threading
import time


def read_request(conn, buf):
    """Reads one request (head plus Content-Length body); None at EOF."""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        rest += chunk
    return head, rest[length:]


def serve(conn, keep_alive, sweep_lag):
    buf = b""
    with conn:
        while True:
            head, buf = read_request(conn, buf)
            if head is None:
                return
            body = b"ok\n"
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                b"Connection: keep-alive\r\n\r\n%s" % (len(body), body)
            )
            if buf:
                continue
            ready, _, _ = select.select([conn], [], [], keep_alive)
            if not ready:
                # The keep-alive timer fired; the sweep closes the connection a little later
                # without checking it again.
                time.sleep(sweep_lag)
                return


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", required=True)
    parser.add_argument("--keep-alive", type=float, default=1.0)
    parser.add_argument("--sweep-lag", type=float, default=0.2)
    args = parser.parse_args()
    if args.bind.startswith("unix:"):
        path = args.bind[5:]
        if os.path.exists(path):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        os.chmod(path, 0o666)
    else:
        host, _, port = args.bind.rpartition(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
    sock.listen(128)
    print("keepalive.py listening on", args.bind, flush=True)
    while True:
        conn, _ = sock.accept()
        threading.Thread(
            target=serve, args=(conn, args.keep_alive, args.sweep_lag), daemon=True
        ).start()


if __name__ == "__main__":
    main()
