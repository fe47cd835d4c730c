"""How the sets of recorded batches of several classes relate, read from an update
record's counts alone (see :mod:`~boundary_unlearning.recording`): which per-class sums add
up to the update of every batch that held any of the classes, each batch once."""

from __future__ import annotations

from typing import Any

from .errors import NotApplicableError

__all__ = ["every_step_held_one", "outermost"]


def every_step_held_one(record: Any, wanted: list[int]) -> bool:
    """Whether every recorded batch held at least one of ``wanted`` (two or more classes):
    then no batch missed any pair of them, which the counts tell (``steps - batches[a] -
    batches[b] + co_batches[a, b]`` batches missed both), and the update to subtract is that
    of every step.

    Args:
        record: the :class:`~boundary_unlearning.recording.UpdateRecord`.
        wanted: the forget classes, sorted.

    Returns:
        ``True`` when the sum of every step is exact.
    """
    if len(wanted) < 2:
        return False
    count, co = record.batches, record.co_batches
    return all(
        record.steps - int(count[a]) - int(count[b]) + int(co[a, b]) == 0
        for i, a in enumerate(wanted)
        for b in wanted[i + 1 :]
    )


def outermost(record: Any, wanted: list[int]) -> list[int]:
    """The classes of ``wanted`` whose batches no other requested class's batches contain
    (ties: the lowest index), after checking they are pairwise disjoint: their sums add up
    to every batch that held any of ``wanted``, each once.

    Args:
        record: the :class:`~boundary_unlearning.recording.UpdateRecord`.
        wanted: the forget classes, sorted.

    Returns:
        The classes whose sums to add.

    Raises:
        NotApplicableError: two classes whose batches overlap without nesting.
    """
    co, count = record.co_batches, record.batches

    def inside(a: int, b: int) -> bool:  # every batch that held a also held b
        nested = int(co[a, b]) == int(count[a])
        return nested and (int(count[b]) > int(count[a]) or b < a)

    outer = [a for a in wanted if not any(inside(a, b) for b in wanted if b != a)]
    for i, a in enumerate(outer):
        for b in outer[i + 1 :]:
            if int(co[a, b]) > 0:
                raise NotApplicableError(
                    f"{int(co[a, b])} recorded batches held both class {a} and class {b} "
                    "(and neither class's batches contain the other's), so their updates "
                    "cannot be subtracted exactly once from per-class sums; forget these "
                    "classes one at a time from the original"
                )
    return outer
