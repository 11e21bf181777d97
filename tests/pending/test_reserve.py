"""The space set aside beside the store for draining a full disk: made, held, spent, made again."""

import errno
import os

import pytest
from support import fill_up, tmpfs

from event_collector.pending.reserve import Reserve

MIB = 1 << 20


def test_the_reserve_is_made_once_and_spent_once(tmp_path):
    reserve = Reserve(str(tmp_path / "pending.db"), 2 * MIB)
    assert not reserve.held
    assert reserve.make() and reserve.held
    assert os.stat(reserve.path).st_blocks * 512 >= 2 * MIB  # allocated, not a sparse file
    assert reserve.spend() and not reserve.held
    assert not reserve.spend()  # spent already (by this process or another): nothing more to give


def test_a_reserve_of_zero_bytes_is_none_and_never_missing(tmp_path):
    reserve = Reserve(str(tmp_path / "pending.db"), 0)
    assert reserve.held and reserve.make() and not reserve.spend()
    assert not os.path.exists(reserve.path)


def test_a_file_system_that_cannot_allocate_runs_without_a_reserve(tmp_path, monkeypatch, caplog):
    def unsupported(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    reserve = Reserve(str(tmp_path / "pending.db"), 2 * MIB)
    # Not a want of space: nothing is refused for a reserve that cannot exist here, and the log says so.
    assert reserve.make() and reserve.held
    assert not os.path.exists(reserve.path)
    assert "runs without a reserve" in caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root")
def test_the_reserve_is_made_only_while_the_volume_has_room_for_it_twice(tmp_path):
    with tmpfs(tmp_path / "volume", 8 * MIB) as volume:
        reserve = Reserve(str(volume / "pending.db"), 3 * MIB)
        assert reserve.make()
        assert reserve.spend()
        with open(volume / "other", "wb") as other:  # 3 MiB taken by something else: 5 MiB left, not 6
            other.write(bytes(3 * MIB))
        assert not reserve.make() and not os.path.exists(reserve.path)
        os.unlink(volume / "other")
        assert reserve.make() and reserve.held
        # On a full volume nothing of it is left behind.
        reserve.spend()
        fill_up(volume)
        assert not reserve.make() and not os.path.exists(reserve.path)
