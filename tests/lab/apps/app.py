"""The lab's WSGI app (gunicorn). Each fault is a path or an environment variable."""
import ctypes
import os
import time

if os.environ.get("GWLAB_REQUIRE_SECRET") and "SECRET_KEY" not in os.environ:
    # Django-style settings without their secret: the worker dies while booting (gunicorn exit 3).
    raise KeyError("SECRET_KEY")


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/slow":
        time.sleep(float(os.environ.get("GWLAB_SLOW", "10")))
    elif path == "/oom":
        hog = b"x" * (int(os.environ.get("GWLAB_OOM_MB", "1024")) << 20)  # touches every page
        del hog
    elif path == "/crash":
        ctypes.string_at(0)  # SIGSEGV
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]
