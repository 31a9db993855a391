"""Starting background worker processes with one BLAS/OpenMP thread each.

The refinement and identity workers run numpy/OpenCV code that would otherwise start one thread per core and
compete with the live loop. A spawned child reads its thread limits from ``os.environ`` as it is when
``start()`` runs, so the limits are set just around that call. One lock for every worker: two threads
starting workers at once would otherwise restore each other's temporary values and leave them set.
"""

from __future__ import annotations

import os
import threading
from multiprocessing.process import BaseProcess

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "LP_NUM_THREADS")
_ENV_LOCK = threading.Lock()


def start_single_threaded(process: BaseProcess) -> None:
    """``process.start()`` with every thread-count variable at 1 for the child; the parent's are restored."""
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in THREAD_ENV}
        os.environ.update({k: "1" for k in THREAD_ENV})
        try:
            process.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
