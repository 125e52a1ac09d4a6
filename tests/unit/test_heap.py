"""The collector settings every service applies once it has started."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

# Each check runs in its own interpreter: settle_heap changes process-wide state.
SETTLED = textwrap.dedent(
    """
    import gc
    import weakref

    from shared.heap import YOUNG_GENERATION_THRESHOLD, settle_heap

    default = gc.get_threshold()
    startup_objects = [{"n": n} for n in range(1000)]
    settle_heap()
    assert gc.get_freeze_count() >= len(startup_objects), gc.get_freeze_count()
    assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, *default[1:]), gc.get_threshold()
    """
)


def _run(code: str) -> None:
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo)
    assert done.returncode == 0, done.stderr


def test_settling_freezes_what_exists_and_raises_only_the_young_threshold() -> None:
    _run(SETTLED)


def test_cyclic_garbage_is_still_reclaimed_without_an_explicit_collection() -> None:
    _run(
        SETTLED
        + textwrap.dedent(
            """
            class Node:
                pass

            node = Node()
            node.itself = node  # a cycle: reference counting alone never frees it
            gone = weakref.ref(node)
            del node
            assert gone() is not None
            # Net container allocations past the threshold trigger a young collection.
            live = [{} for _ in range(YOUNG_GENERATION_THRESHOLD + 1)]
            assert gone() is None, "a young collection should have run and freed the cycle"
            """
        )
    )
