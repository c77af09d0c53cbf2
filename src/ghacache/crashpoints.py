"""Named crash points, for the fault-injection suite (``tests/hardening/test_crash_points.py``).

``crash_point("finalize.after_publish")`` kills this process with SIGKILL, as the OOM killer
or a lost machine would, if ``GHACACHE_CRASH_AT`` named that point when this module was
imported: ``finalize.after_publish`` kills at its first hit, ``finalize.after_publish@3`` at
its third. Otherwise a call is one string comparison. The suite arms one point per server
process, drives the request that reaches it, restarts the server on the same data and checks
what the restart finds (docs/operating.md, "What a crash leaves behind").

The variable is read here, once, rather than in ``cli/`` with the settings: it is no setting
and no code path passes it on, so a server started without it cannot crash on purpose.
"""

from __future__ import annotations

import os
import signal
from typing import Literal, get_args

CrashPoint = Literal[
    # Uploads (server/service.py, index/entries.py), in the order a save passes them.
    "reserve.after_commit",  # reservation row committed, no reply yet
    "stage.after_write",  # a block, blob body or v1 chunk is in the store, not in the index
    "stage.after_record",  # ... and recorded as a part, no reply yet
    "assemble.after_store",  # v2 block list / Put Blob assembled in the store, entry RESERVED
    "assemble.after_mark",  # ... and the entry UPLOADED, no reply yet
    "v1.commit.after_assemble",  # v1 chunks assembled, nothing published
    "finalize.after_publish",  # the blob is published, the entry not committed
    "commit.in_transaction",  # inside the commit transaction, before it ends
    "finalize.after_commit",  # committed; staged bytes not yet removed, no reply yet
    # Upkeep (server/service.py, server/maintenance.py).
    "expire.after_index_delete",  # an abandoned reservation deleted, its staged bytes kept
    "evict.after_index_delete",  # evicted or deleted entries gone from the index, blobs kept
    "evict.after_blob_delete",  # ... and their blobs deleted, BuildKit indexes not repaired
    "reconcile.after_blob_delete",  # one orphan blob deleted
    "reconcile.after_missing_removed",  # entries whose bytes are gone removed
    "reconcile.after_upload_discard",  # one orphan upload discarded
    # BuildKit index maintenance (server/buildkit.py).
    "buildkit.merge.after_rewrite",  # the merged index staged in place of the upload
    "buildkit.gc.after_publish",  # a repaired index published, the entry not repointed
    "buildkit.gc.after_replace",  # the entry repointed, the old index blob not deleted
]
POINTS: tuple[CrashPoint, ...] = get_args(CrashPoint)
ENV = "GHACACHE_CRASH_AT"


class _Arming:
    """The point ``GHACACHE_CRASH_AT`` names, the hit that kills, and the hits so far."""

    def __init__(self, spec: str) -> None:
        name, _, nth = spec.partition("@")
        self.point: str | None = name or None
        self.nth = int(nth) if nth else 1
        self.hits = 0
        if self.point is not None and (self.point not in POINTS or self.nth < 1):
            raise ValueError(f"{ENV}={spec!r}: expected one of {', '.join(POINTS)}, optionally @N")


_ARMED = _Arming(os.environ.get(ENV, ""))


def crash_point(name: CrashPoint) -> None:
    """Die here by SIGKILL if ``GHACACHE_CRASH_AT`` armed ``name`` and this is the hit it named."""
    if name != _ARMED.point:
        return
    _ARMED.hits += 1
    if _ARMED.hits == _ARMED.nth:
        # Unbuffered, so the line is in the log however the process dies.
        os.write(2, f"ghacache: crash point {name} (hit {_ARMED.hits}): SIGKILL\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)
