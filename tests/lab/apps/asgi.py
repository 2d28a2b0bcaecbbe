"""The lab's ASGI app (uvicorn). /slow blocks the event loop, as a sync call in an async view does."""
import ctypes
import os
import time


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        time.sleep(float(os.environ.get("GWLAB_SLOW", "10")))
    elif scope["path"] == "/oom":
        hog = b"x" * (int(os.environ.get("GWLAB_OOM_MB", "1024")) << 20)  # touches every page
        del hog
    elif scope["path"] == "/crash":
        ctypes.string_at(0)  # SIGSEGV: the whole single-process server dies
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok\n"})
