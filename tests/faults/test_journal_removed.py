"""Parts of the in-flight journal removed under a running collector (an operator freeing space, a tmp
cleaner), with OpenSearch unreachable, then `kill -9`: every event answered 2xx is indexed once after the
restart, and no answer is a 5xx other than 503. docs/delivery.md, "What may be removed or lost on disk"."""

import errno
import os
import shutil
import signal

import pytest

from event_collector.pending import journal
from support import Load, assert_delivered_exactly_once, event, journal_events, wait_until

UNREACHABLE = "http://127.0.0.1:9"
EVENTS = 200


def remove_directory(path: str) -> None:
    """`rm -rf`, run again when the collector's rescue wrote a new segment into the directory while it was
    being emptied (rmdir then fails with ENOTEMPTY), as an operator would run it again."""
    for _ in range(20):
        try:
            shutil.rmtree(path)
            return
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY:
                raise
    raise AssertionError(f"{path} kept being refilled")


def remove(part: str, database) -> None:
    [directory] = journal.journal_directories(str(database))
    segments = sorted(name for name in os.listdir(directory) if name.endswith(".seg"))
    if part == "directory":
        remove_directory(journal.directory_of(str(database)))
    elif part == "lock file":
        os.unlink(os.path.join(directory, "lock"))
    else:
        assert len(segments) >= 3, segments  # small segments: several rolled ones and the active one
        os.unlink(os.path.join(directory, segments[-1] if part == "active segment" else segments[0]))


def deleted_segments_open(pid: int) -> list[str]:
    """The journal segments the process holds open whose name was removed."""
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            continue
    return [target for target in targets if target.endswith(".seg (deleted)")]


def send(collector, count: int) -> list[str]:
    """Send `count` events one by one; the log_ids answered 2xx. Any answer but 200 or 503 fails."""
    accepted = []
    for _ in range(count):
        one = event(param={"padding": "p" * 200})
        response = collector.post_event(one)
        assert response.status_code in (200, 503), (response.status_code, response.text)
        assert response.status_code == 200, response.text
        if response.status_code == 200:
            accepted.append(one["log_id"])
    return accepted


@pytest.mark.parametrize("traffic_after", [False, True], ids=["quiet-after", "traffic-after"])
@pytest.mark.parametrize("part", ["directory", "active segment", "older segment", "lock file"])
def test_a_part_of_the_journal_removed_then_kill_9_loses_nothing(collector_factory, opensearch, tmp_path, part,
                                                                 traffic_after):
    database = tmp_path / "store.db"
    first = collector_factory(DATABASE=database, OPEN_SEARCH_DNS=UNREACHABLE, JOURNAL_SEGMENT_BYTES=16384)
    accepted = send(first, EVENTS)
    assert len(accepted) == EVENTS  # OpenSearch unreachable: every event is held in flight, in the journal
    wait_until(lambda: len(journal_events(database)) == EVENTS, timeout=10, message="the events in the journal")
    remove(part, database)
    if traffic_after:
        accepted += send(first, EVENTS)
    # The journal notices by itself, traffic or not, and holds every accepted event again on disk.
    wait_until(lambda: sorted(e.log_id for e in journal_events(database)) == sorted(accepted), timeout=10,
               message=f"every accepted event back in the journal after its {part} was removed")
    wait_until(lambda: os.path.exists(os.path.join(journal.journal_directories(str(database))[0], "lock")),
               timeout=10, message="the lock file made again")
    first.stop(signal.SIGKILL)

    restarted = collector_factory(DATABASE=database, SERVER_ENVIRONMENT=first.environment)
    assert_delivered_exactly_once(f"journal's {part} removed, {'traffic' if traffic_after else 'quiet'}, kill -9",
                                  accepted, opensearch, restarted.environment, sent=len(accepted),
                                  fault="store_files_lost", ack_mode="durable",
                                  settings=first.report_settings("JOURNAL_SEGMENT_BYTES"))
    wait_until(lambda: restarted.pending_rows() == 0, timeout=60, message="the pending table to empty")


@pytest.mark.parametrize("part", ["directory", "active segment"])
def test_a_part_of_the_journal_removed_under_load_with_opensearch_up_then_kill_9_loses_nothing(
        collector_factory, opensearch, tmp_path, part):
    database = tmp_path / "store.db"
    first = collector_factory(DATABASE=database, JOURNAL_SEGMENT_BYTES=16384)
    with Load(first, clients=4) as load:
        wait_until(lambda: len(load.accepted) >= 300 and len(journal.journal_directories(str(database))) == 1
                   and len(os.listdir(journal.journal_directories(str(database))[0])) >= 4,
                   timeout=60, message="load, and a journal of several segments")
        if part == "directory":
            remove_directory(journal.directory_of(str(database)))
        else:
            [directory] = journal.journal_directories(str(database))
            active = sorted(name for name in os.listdir(directory) if name.endswith(".seg"))[-1]
            os.unlink(os.path.join(directory, active))
        # Rescued (copied into a new segment), or settled and closed meanwhile: no removed file is held open.
        wait_until(lambda: not deleted_segments_open(first.process.pid), timeout=10,
                   message="the removed segment rescued or settled")
        noticed = len(load.accepted)
        wait_until(lambda: len(load.accepted) >= noticed + 200, timeout=60, message="load after the rescue")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(30)
    assert {status for status in load.statuses if isinstance(status, int) and status >= 500} <= {503}
    restarted = collector_factory(DATABASE=database, SERVER_ENVIRONMENT=first.environment)
    assert_delivered_exactly_once(f"journal's {part} removed under load, OpenSearch up, kill -9", load, opensearch,
                                  restarted.environment, fault="store_files_lost", ack_mode="durable",
                                  settings=first.report_settings("JOURNAL_SEGMENT_BYTES"))
