"""Garbage-collector tuning for a server process (called once from chatapp/asgi.py, after start-up).

A full (generation 2) collection walks every tracked object. Measured in `make bench` (1000-viewer
fan-out, 1000-send bursts): daphne processes paused 100-230 ms in such collections, most of the time
spent walking what start-up created (Django, the URL and model registries, every module: about
110,000 objects) and will never free. Every viewer's stream stalls for the pause. `gc.freeze()` moves
the start-up objects to a permanent generation that collections skip; a larger generation-0 threshold
makes collections rarer (each then frees more at once). Reference counting still frees everything
that is not in a cycle at once; only cyclic garbage waits for a collection.
"""

from __future__ import annotations

import gc


def tune_gc(*, freeze: bool, gen0_threshold: int) -> None:
    """Freeze what exists now (after a collection, so no garbage is frozen) and set the generation-0
    threshold (0 keeps Python's)."""
    if gen0_threshold > 0:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(gen0_threshold, gen1, gen2)
    if freeze:
        gc.collect()
        gc.freeze()
