"""The soak's switchable upstream (`cargo xtask soak`): a small HTTP server on one listener
(`unix:/path` or `127.0.0.1:PORT`) that answers every request `200 ok`.

While the control file exists it does not listen: it closes its listener (and removes its unix
socket file); once the file is gone it listens again. The process stays the same throughout, so
the proxy's failed connects in between are nothing listening at the target (ENOENT on a unix
path, ECONNREFUSED on a TCP port), never a restart or a death.

Usage: soak_app.py BIND CONTROL_FILE
"""
import os
import select
import socket
import sys

ANSWER = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"


def listen(bind):
    if bind.startswith("unix:"):
        path = bind[len("unix:"):]
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        os.chmod(path, 0o666)  # the proxy's workers run as another user
    else:
        host, port = bind.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
    s.listen(128)
    return s


def serve(conn):
    conn.settimeout(2.0)
    try:
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        conn.sendall(ANSWER)
    except OSError:
        pass
    finally:
        conn.close()


def drain(s):
    """Answers the connections already queued, so closing the listener resets none of them."""
    s.setblocking(False)
    while True:
        try:
            conn, _ = s.accept()
        except (BlockingIOError, InterruptedError):
            break
        conn.setblocking(True)
        serve(conn)


def main():
    bind, control = sys.argv[1], sys.argv[2]
    s = listen(bind)
    print("listening", flush=True)
    while True:
        down = os.path.exists(control)
        if down and s is not None:
            drain(s)
            s.close()
            s = None
            if bind.startswith("unix:"):
                os.unlink(bind[len("unix:"):])
            print("down", flush=True)
        elif not down and s is None:
            s = listen(bind)
            print("listening", flush=True)
        if s is None:
            select.select([], [], [], 0.02)
            continue
        ready, _, _ = select.select([s], [], [], 0.02)
        if ready:
            try:
                conn, _ = s.accept()
            except OSError:
                continue
            serve(conn)


if __name__ == "__main__":
    main()
