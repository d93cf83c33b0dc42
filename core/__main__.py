"""``python -m core ...``: the command line (see core.cli)."""

import atexit
import os
import sys
import threading

from .cli import main

rc = main()
if threading.active_count() == 1:
    # The interpreter's teardown of torch and numba takes 0.3-0.6 s on a 2-core machine. The
    # command is done (files closed, its threads joined): run the exit handlers, flush, leave.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc if isinstance(rc, int) else 1)
raise SystemExit(rc)
