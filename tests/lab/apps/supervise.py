"""A tiny systemd stand-in for the lab: starts a unit's process the way systemd does and restarts it.

Like systemd, the child is forked (not executed) and named "(unit)" with prctl(PR_SET_NAME), then
it enters WorkingDirectory= and executes ExecStart=; a failure there ends it with systemd's own
exit codes: 200 (EXIT_CHDIR) or 203 (EXIT_EXEC). Restart=always, RestartSec=0.5.

usage: supervise.py UNIT WORKDIR PROGRAM [ARGS...]
"""
import ctypes
import os
import sys
import time

PR_SET_NAME = 15
libc = ctypes.CDLL(None, use_errno=True)
unit, workdir, argv = sys.argv[1], sys.argv[2], sys.argv[3:]

while True:
    pid = os.fork()
    if pid == 0:
        libc.prctl(PR_SET_NAME, f"({unit})".encode()[:15], 0, 0, 0)
        try:
            os.chdir(workdir)
        except OSError as e:
            print(f"{unit}: Changing to the requested working directory failed: {e}", file=sys.stderr)
            os._exit(200)
        try:
            os.execv(argv[0], argv)
        except OSError as e:
            print(f"{unit}: Failed to execute {argv[0]}: {e}", file=sys.stderr)
            os._exit(203)
    os.waitpid(pid, 0)
    time.sleep(0.5)
