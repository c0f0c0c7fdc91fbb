"""walk_tree: several folders listed at once, each batch once, errors raised, early close stops listers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from fotoowl.sources.walking import walk_tree

# A tree: folder -> (its files, its subfolders)
TREE: dict[str, tuple[list[str], list[str]]] = {
    "root": (["r1"], ["a", "b", "c", "d", "e", "f"]),
    "a": (["a1", "a2"], ["a/x"]),
    "b": (["b1"], []),
    "c": (["c1"], []),
    "d": ([], []),
    "e": (["e1"], []),
    "f": (["f1"], ["f/y"]),
    "a/x": (["x1"], []),
    "f/y": (["y1"], []),
}


class Lister:
    """Lists TREE, one page per file, each page a round trip; records how many folders list at once."""

    def __init__(self, round_trip_s: float = 0.01, fail: str | None = None) -> None:
        self.round_trip_s = round_trip_s
        self.fail = fail
        self.listing = 0
        self.most_at_once = 0
        self.started: list[str] = []
        self.cancelled: list[str] = []

    async def __call__(self, folder: str, found: Callable[[str], None]) -> AsyncIterator[list[str]]:
        self.started.append(folder)
        self.listing += 1
        self.most_at_once = max(self.most_at_once, self.listing)
        try:
            files, subfolders = TREE[folder]
            await asyncio.sleep(self.round_trip_s)
            if folder == self.fail:
                raise RuntimeError(f"listing {folder} failed")
            for sub in subfolders:
                found(sub)
            for name in files:
                yield [name]
                await asyncio.sleep(self.round_trip_s)
        except asyncio.CancelledError:
            self.cancelled.append(folder)
            raise
        finally:
            self.listing -= 1


def all_files() -> list[str]:
    return sorted(f for files, _ in TREE.values() for f in files)


@pytest.mark.parametrize("at_once", [1, 3, 8])
async def test_every_file_once_with_at_most_so_many_folders_at_once(at_once: int) -> None:
    lister = Lister()
    got = [name async for batch in walk_tree("root", lister, folders_at_once=at_once) for name in batch]
    assert sorted(got) == all_files()
    assert lister.most_at_once == min(at_once, 7)  # the root lists on while its six subfolders start
    assert sorted(lister.started) == sorted(TREE)


async def test_one_at_a_time_is_breadth_first() -> None:
    lister = Lister()
    got = [name async for batch in walk_tree("root", lister, folders_at_once=1) for name in batch]
    assert got == ["r1", "a1", "a2", "b1", "c1", "e1", "f1", "x1", "y1"]


async def test_folders_start_in_the_order_they_were_found() -> None:
    lister = Lister()
    [_ async for _ in walk_tree("root", lister, folders_at_once=2)]
    assert lister.started[:7] == ["root", "a", "b", "c", "d", "e", "f"]


async def test_a_folders_error_ends_the_walk_and_stops_the_others() -> None:
    lister = Lister(fail="c")
    got: list[str] = []
    with pytest.raises(RuntimeError, match="listing c failed"):
        async for batch in walk_tree("root", lister, folders_at_once=4):
            got += batch
    assert lister.listing == 0  # nothing left listing in the background
    assert "c1" not in got


async def test_closing_the_walk_early_cancels_its_listers() -> None:
    lister = Lister()
    walk = walk_tree("root", lister, folders_at_once=4)
    assert await anext(walk) == ["r1"]
    await asyncio.sleep(0.03)  # the root has found its subfolders; four of them list
    await walk.aclose()
    assert lister.listing == 0
    assert lister.cancelled


async def test_listers_wait_while_the_caller_is_slow() -> None:
    """Pages listed but not taken stay bounded: a slow consumer holds the listers back."""
    lister = Lister(round_trip_s=0)
    walk = walk_tree("root", lister, folders_at_once=2)
    assert await anext(walk) == ["r1"]
    await asyncio.sleep(0.05)  # listers run on while the caller does not take
    listed_ahead = len(lister.started)
    rest = [name async for batch in walk for name in batch]
    assert len(rest) == len(all_files()) - 1
    # Two batches may wait at most; a lister waiting for room does not start the next folder.
    assert listed_ahead <= 1 + 2 + 2
