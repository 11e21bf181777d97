"""Heartbeat files: when an owner counts as alive, with an injected clock instead of sleeping."""

import os
import sqlite3
import time

from event_collector.pending import SqliteStore
from event_collector.pending.liveness import Liveness
from support import Clock

OWNER, OTHER = "a" * 32, "b" * 32



def pair(tmp_path, timeout_seconds: float = 30.0):
    clock = Clock()
    path = str(tmp_path / "pending.db")
    return clock, Liveness(path, OWNER, timeout_seconds, clock), Liveness(path, OTHER, timeout_seconds, clock)


def test_an_owner_is_alive_while_it_beats_and_dead_once_its_beat_is_older_than_the_timeout(tmp_path):
    clock, owner, judge = pair(tmp_path)
    owner.beat()
    clock.now += 86_400 * 3
    assert not judge.is_alive(OWNER)
    for _ in range(5):  # however long, as long as it beats
        owner.beat()
        clock.now += 29.9
        assert judge.is_alive(OWNER)
    clock.now += 0.2
    assert not judge.is_alive(OWNER)


def test_a_stopped_owner_is_dead_at_once(tmp_path):
    clock, owner, judge = pair(tmp_path)
    owner.start()
    assert judge.is_alive(OWNER)
    owner.stop()
    assert not judge.is_alive(OWNER)


def test_an_owner_without_a_file_is_dead_unless_the_directory_was_just_made(tmp_path):
    clock, owner, judge = pair(tmp_path)
    judge.beat()  # makes the directory: owners of before it (an older collector's) have had no chance to beat
    assert judge.is_alive(OWNER)
    clock.now += 31
    assert not judge.is_alive(OWNER)
    assert not judge.is_alive("not-an-owner-id")
    assert judge.is_alive(OTHER)  # itself, always


def test_a_deleted_directory_is_made_again_by_the_next_beat(tmp_path):
    clock, owner, judge = pair(tmp_path)
    owner.beat()
    for path in owner.directory.iterdir():
        path.unlink()
    owner.directory.rmdir()
    clock.now += 1000
    assert judge.is_alive(OWNER)  # nothing to judge by: nobody is declared dead on a missing directory
    owner.beat()
    clock.now += 29
    assert judge.is_alive(OWNER)


def test_owners_silent_for_a_day_are_forgotten(tmp_path):
    clock, owner, judge = pair(tmp_path)
    owner.beat()
    clock.now += 86_401
    judge.beat()
    assert judge.forget_silent(86_400) == 1
    assert sorted(p.name for p in judge.directory.iterdir()) == [".since", OTHER]


async def test_a_store_keeps_beating_while_another_process_locks_it_for_longer_than_the_timeout(tmp_path):
    store = SqliteStore(str(tmp_path / "pending.db"), owner_timeout_seconds=0.3)
    await store.open()
    judge = Liveness(store.path, OTHER, timeout_seconds=0.3)
    locker = sqlite3.connect(store.path, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")  # a long transaction elsewhere: nothing can be written meanwhile
        beats = set()
        # A window of five timeouts is the measurement itself, not a wait for something to happen.
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert judge.is_alive(store.owner)
            beats.add(os.stat(judge.directory / store.owner).st_mtime)
            time.sleep(0.02)
        assert len(beats) >= 5, beats
    finally:
        locker.execute("ROLLBACK")
        locker.close()
        await store.close()
