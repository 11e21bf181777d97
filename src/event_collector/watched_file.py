"""A configuration file read at start-up and read again while serving: on SIGHUP, and when it changed.

SOURCES_FILE (sources.py) and RULES_FILE (rules/) are both such files. Reading one again never takes down
what is in force: a file that cannot be read or parsed is refused with a logged message and the last good
reading stays, so a typo never locks every sender out nor lets every event through unchecked.
"""

from __future__ import annotations

import os

from .exceptions import ConfigError

MAX_FILE_BYTES = 1 << 20


class WatchedFile:
    """The file at `path` (named by the setting `setting` in messages), read whole as text. `changed` tells
    an edit or a replacement (a rename over it) from the file last read, by inode, size and times."""

    def __init__(self, setting: str, path: str) -> None:
        self.setting = setting
        self.path = path
        self._seen: tuple[int, int, int, int] | None = None

    def read_text(self) -> str:
        """The file's text, or ConfigError naming the setting and the file."""
        try:
            with open(self.path, encoding="utf-8") as file:
                seen = _identity(os.fstat(file.fileno()))
                text = file.read(MAX_FILE_BYTES + 1)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.setting} {self.path}: cannot be read: {exc}") from None
        self._seen = seen  # a bad file is said once, not at every look
        if len(text) > MAX_FILE_BYTES:
            raise ConfigError(f"{self.setting} {self.path}: larger than {MAX_FILE_BYTES} bytes")
        return text

    def changed(self) -> bool:
        """Whether the file at the path is not the one last read (edited, or replaced by a rename)."""
        if not self.path:
            return False
        try:
            return _identity(os.stat(self.path)) != self._seen
        except OSError:
            return self._seen is not None


def _identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    return stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns
