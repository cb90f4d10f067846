"""The session's shared notes: a Yjs document with one ``Y.Text`` named ``notes``."""

from __future__ import annotations

from collections.abc import Iterable

import pycrdt

from rooms.errors import NotesRejected

ROOT = "notes"
MAX_UPDATE = 256 * 1024
MAX_BYTES = 1024 * 1024


class Notes:
    """Pure state: updates in, full state and plain text out."""

    def __init__(
        self,
        updates: Iterable[bytes] = (),
        *,
        max_update: int = MAX_UPDATE,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.max_update = max_update
        self.max_bytes = max_bytes
        self.doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
        self.text = self.doc.get(ROOT, type=pycrdt.Text)
        for u in updates:
            self.doc.apply_update(u)
        self._state: bytes | None = None

    def check(self, update: bytes) -> None:
        """Raise :class:`NotesRejected` unless ``update`` is a Yjs update that touches only the
        ``notes`` text and keeps the document within ``max_bytes``. Changes nothing."""
        if len(update) > self.max_update:
            raise NotesRejected(f"a notes update may be at most {self.max_update} bytes")
        trial: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
        try:
            trial.apply_update(self.state())
            trial.apply_update(update)
        except Exception:
            raise NotesRejected("not a valid Yjs update") from None
        if set(trial.keys()) - {ROOT}:
            raise NotesRejected(f"only the {ROOT!r} text may be edited")
        try:
            trial.get(ROOT, type=pycrdt.Text)
        except Exception:
            raise NotesRejected(f"{ROOT!r} must be a text") from None
        if len(trial.get_update()) > self.max_bytes:
            raise NotesRejected(f"the notes may hold at most {self.max_bytes} bytes")

    def apply(self, update: bytes) -> None:
        """Merge one stored update (checked before it was stored)."""
        self.doc.apply_update(update)
        self._state = None

    def state(self) -> bytes:
        """The whole document as one Yjs update."""
        if self._state is None:
            self._state = self.doc.get_update()
        return self._state

    def state_vector(self) -> bytes:
        return self.doc.get_state()

    def plain(self) -> str:
        return str(self.text)
