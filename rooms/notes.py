"""The session's shared notes: a Yjs document with one ``Y.Text`` named ``notes``."""

from __future__ import annotations

from collections.abc import Iterable

import pycrdt

from rooms.errors import NotesRejected


class Notes:
    """Pure state: updates in, full state and plain text out."""

    def __init__(self, updates: Iterable[bytes] = ()) -> None:
        self.doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
        self.text = self.doc.get("notes", type=pycrdt.Text)
        for u in updates:
            self.doc.apply_update(u)

    def apply(self, update: bytes) -> None:
        """Merge one Yjs update; raise :class:`NotesRejected` if it is not one."""
        try:
            self.doc.apply_update(update)
        except Exception as exc:
            raise NotesRejected(f"not a valid Yjs update: {exc}") from None

    def state(self) -> bytes:
        """The whole document as one Yjs update."""
        return self.doc.get_update()

    def plain(self) -> str:
        return str(self.text)
