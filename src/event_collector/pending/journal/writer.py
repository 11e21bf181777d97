"""One process's journal: sequence numbers, appends and settles, rolling when full, and the rescue of files
someone removed while the process runs."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Sequence

from ...envelope import Envelope
from ...exceptions import StoreError
from .format import event_record, read_segment, settled_record
from .place import Place, directory_of, fsync_directory
from .segments import OutOfSpace, Segment, Segments
from .sync import GroupSync

log = logging.getLogger(__name__)

SEGMENT_BYTES = 8 << 20
# Settled segments kept only because an older one holds an unsettled event: at this many the journal is
# compacted into one segment.
_PINNED_SEGMENTS = 4


class Journal:
    """One process's journal. Not thread-safe: the event loop's thread writes it."""

    def __init__(self, store_path: str, owner: str, *, sync: bool, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.place = Place(directory_of(store_path), owner, sync=sync)
        self.directory = self.place.directory
        self.sync = sync
        self._segment_bytes = segment_bytes
        self._group = GroupSync(self.directory, failed=self._sync_failed)
        self._segments = Segments(self.directory, closed=self._group.forget)
        self._next_seq = 1
        # Settled events whose settle record could not be written yet (disk full): written with the next.
        self._unwritten_settles: list[int] = []
        # Part of the journal was removed and could not be made again yet: writes refuse until it is.
        self._rescue_failed: str | None = None
        # The segment count at a compaction that failed: the next is tried only once there are more.
        self._compaction_failed_at = 0

    @property
    def syncs(self) -> int:
        return self._group.rounds

    @property
    def unsettled(self) -> int:
        return self._segments.unsettled

    def open(self) -> None:
        self.place.make()

    def close(self) -> None:
        """Remove the directory when every event is settled; otherwise leave it for adoption. Then drop the
        lock."""
        self._group.close()
        self.check()  # a file removed since the last check: what the next process adopts must be whole
        if self._unwritten_settles and self._segments and not self._segments.active.torn:
            try:
                self._append(self._segments.active, settled_record(self._unwritten_settles))
            except StoreError as exc:
                log.warning("could not note %d settled events in the journal at the stop: %s",
                            len(self._unwritten_settles), exc)
        unsettled = self.unsettled
        self._segments.close_all()
        if unsettled:
            log.warning("%d events in flight were not settled at the stop: journal %s is left for the next "
                        "process to replay", unsettled, self.directory)
        self.place.release(remove=not unsettled)

    # -- writing ---------------------------------------------------------------------------------

    def write_events(self, envelopes: Sequence[Envelope]) -> range:
        """Append the envelopes' records in one write; returns their sequence numbers. Raises StoreError
        when the write fails, having cut off what it wrote. A write that finds the disk full rolls the
        segment, so that it is unlinked once its events are settled, and tries once more where the settled
        segments before it leave room."""
        try:
            return self._write_events(envelopes)
        except OutOfSpace as exc:
            if self._segments.active.rolled:
                self._segments.new(self._next_seq)
                self._new_file()
            if not self._drop_settled():
                raise StoreError(str(exc)) from exc
        try:
            return self._write_events(envelopes)
        except OutOfSpace as exc:
            raise StoreError(str(exc)) from exc

    def _write_events(self, envelopes: Sequence[Envelope]) -> range:
        segment = self._segment_for_events()
        first = self._next_seq
        if len(envelopes) == 1:  # the usual request: no generator to join
            records = event_record(first, envelopes[0])
        else:
            records = b"".join(event_record(seq, envelope) for seq, envelope in enumerate(envelopes, first))
        settles = self._unwritten_settles
        if settles:
            self._unwritten_settles = []
            records = settled_record(settles) + records
        try:
            self._append(segment, records)
        except StoreError:
            if settles:
                self._unwritten_settles = settles + self._unwritten_settles
            raise
        seqs = range(first, first + len(envelopes))
        self._next_seq = seqs.stop
        if len(seqs) == 1:
            segment.live.add(first)
        else:
            segment.live.update(seqs)
        return seqs

    def wait_until_durable(self) -> asyncio.Future | None:
        """With sync, a future done once everything written so far is on disk (one fdatasync for all who
        wait meanwhile); without, None: written is kept."""
        return self._group.wait() if self.sync else None

    def settle(self, seqs: Sequence[int]) -> None:
        """These events are delivered, or kept elsewhere now: forget them, and unlink the segments no event
        pins. Never raises. The settle record is written unsynced (a lost one only means a redelivery,
        answered 409); one that cannot be written now is written with the next."""
        if not seqs or not self._segments:
            return
        self._segments.settle(seqs)
        self._unwritten_settles.extend(seqs)
        settles, self._unwritten_settles = self._unwritten_settles, []
        try:
            if self._segments.active.torn:  # nothing may follow its torn record: the settle record starts a new
                self._segments.new(self._next_seq)
                self._new_file()
            self._append(self._segments.active, settled_record(settles))
        except StoreError as exc:
            self._unwritten_settles = settles
            log.warning("could not note %d settled events in the journal yet: %s", len(settles), exc)
        self._drop_settled()

    def _segment_for_events(self, after_rescue: bool = False) -> Segment:
        if self.place.lock_fd is None:
            raise StoreError("the in-flight journal is not open")
        if self._rescue_failed is not None:  # the check tries again every half second; a write only refuses
            raise StoreError(f"in-flight journal {self.directory}: {self._rescue_failed}")
        if self._segments:
            active = self._segments.active
            if active.size < self._segment_bytes and not active.rolled:
                return active
            active.rolled = True
        try:
            self._segments.new(self._next_seq)
        except StoreError:
            if after_rescue:
                raise
            self.check()  # the directory may be gone since the last check: made whole, then once more
            return self._segment_for_events(after_rescue=True)
        self._new_file()
        self._drop_settled()
        return self._segments.active  # the new one, or a compaction's copy made after it

    def _append(self, segment: Segment, data: bytes) -> None:
        segment.append(data)
        if self.sync:
            self._group.wrote(segment.fd)

    def _new_file(self) -> None:
        if self.sync:  # the new file's name must reach the disk with its first records
            self._group.made_file()

    def _sync_failed(self) -> None:
        """An fdatasync failed: what it did not sync may be lost, and a later fdatasync of the same file
        would not say so. Nothing more goes into the active segment; the next write starts a new one."""
        if self._segments:
            self._segments.active.rolled = True

    def _drop_settled(self) -> int:
        dropped = self._segments.drop_settled()
        if dropped:  # settle records for events in unlinked segments need no writing any more
            oldest = self._segments.oldest_first_seq()
            self._unwritten_settles = [seq for seq in self._unwritten_settles if seq >= oldest]
        elif self._segments.pinned() >= _PINNED_SEGMENTS and len(self._segments) > self._compaction_failed_at:
            # An event that stays unsettled long (held in memory through a failing store) pins every
            # segment after its own: copy what is unsettled into one segment, so the disk use stays bounded.
            try:
                self._rewrite(f"{len(self._segments)} segments pinned by an old unsettled event")
                self._compaction_failed_at = 0
            except (OSError, StoreError) as exc:
                self._compaction_failed_at = len(self._segments)
                log.warning("could not compact the in-flight journal %s (tried again once it has one more "
                            "segment): %s", self.directory, exc)
        return dropped

    # -- what someone removed ----------------------------------------------------------------------

    def check(self) -> None:
        """Make the journal whole again if part of it was removed from the file system while in use: its
        directory, its lock file, or a segment (run by the store every half second, traffic or not). Every
        unsettled event is still readable from the descriptors this process holds; they are written into
        one new segment, and the old segments are unlinked. Never raises: a rescue that fails (a full disk)
        is tried again at the next check, and writes are refused (503) until it succeeds."""
        if self.place.lock_fd is None:
            return
        try:
            place_lost = self.place.lost()
            lost = place_lost + [os.path.basename(s.path) for s in self._segments if s.unlinked()]
            if not lost and self._rescue_failed is None:
                return
            if lost and self._rescue_failed is None:
                log.error("in-flight journal %s: %s removed while in use; writing its %d unsettled events again",
                          self.directory, ", ".join(lost), self.unsettled)
            if place_lost:
                self.place.restore()
            self._rewrite("a rescue")
        except (OSError, StoreError) as exc:
            first = self._rescue_failed is None
            self._rescue_failed = f"removed while in use, and not made again yet: {exc}"
            if first:
                log.error("in-flight journal %s could not be made again (tried again every check; new events "
                          "are refused until it is): %s", self.directory, exc)
            return
        self._rescue_failed = None

    def _rewrite(self, why: str) -> None:
        """Write every unsettled event, read from the descriptors held, into one new segment, then unlink
        and close the others (a rescue, or a compaction). Raises OSError or StoreError, having changed
        nothing, when the copy cannot be written."""
        live = self._segments.live_seqs()
        events = [event for segment in self._segments for event in read_segment(segment.fd)[0]
                  if event.seq in live]
        copy = self._segments.new(min(live, default=self._next_seq))
        try:
            copy.append(b"".join(event_record(event.seq, event) for event in events))
            if self.sync:  # the copies replace files that are gone: on disk before anything else is answered
                os.fdatasync(copy.fd)
                fsync_directory(self.directory)
        except (OSError, StoreError):
            self._segments.discard_newest()
            raise
        copy.live.update(event.seq for event in events)
        self._segments.keep_only_newest()
        log.info("in-flight journal %s: %d unsettled events copied into one segment (%s)", self.directory,
                 len(live), why)
