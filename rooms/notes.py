"""The session's shared notes: a Yjs document with one ``Y.Text`` named ``notes``."""

from __future__ import annotations

from collections.abc import Iterable

import pycrdt

from rooms.errors import NotesRejected

ROOT = "notes"
MAX_UPDATE = 256 * 1024
MAX_BYTES = 1024 * 1024
MAX_IN_SHADOW = 256  # stored updates whose message back has not come yet


class Notes:
    """Pure state: the stored document, and the updates accepted but not stored yet.

    ``doc`` holds only stored updates (what a welcome shows). A candidate update is checked
    against a shadow document that also holds the pending ones, so updates sent in a burst
    cannot pass the size cap together; the shadow is rebuilt only after a refusal.
    """

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
        self._pending: dict[int, bytes] = {}
        self._shadow: pycrdt.Doc[pycrdt.Text] | None = None
        # updates stored from here, in the shadow already: their ``apply`` skips it (S6: one
        # Yjs merge of three per update); dropped whenever the shadow is rebuilt
        self._in_shadow: set[bytes] = set()
        self._size = 0  # an upper bound of the shadow's encoded size

    def check(self, token: int, update: bytes) -> None:
        """Accept ``update`` as pending under ``token``, or raise :class:`NotesRejected` unless
        it is a Yjs update that touches only the ``notes`` text and keeps the document (with
        the other pending updates) within ``max_bytes``."""
        if len(update) > self.max_update:
            raise NotesRejected(f"a notes update may be at most {self.max_update} bytes")
        shadow = self._shadow_doc()
        with shadow.transaction():  # one for the whole check (S6: a third of its cost)
            before = shadow.get_state()
            try:
                shadow.apply_update(update)
            except Exception:
                self._refused("not a valid Yjs update")
            if update[:1] != b"\x00" and shadow.get_state() == before:
                # it inserts, yet nothing of it could be integrated: it builds on an update the
                # server never accepted, and would be stored as dead weight
                self._refused("this update depends on one the server does not have")
            if set(shadow.keys()) - {ROOT}:
                self._refused(f"only the {ROOT!r} text may be edited")
        self._size += len(update)
        if self._size > self.max_bytes:
            self._size = len(shadow.get_update())  # the bound was loose: measure
            if self._size > self.max_bytes:
                self._refused(f"the notes may hold at most {self.max_bytes} bytes")
        self._pending[token] = update

    def _refused(self, why: str) -> None:
        self._shadow = None  # it may hold part of the refused update: rebuild it next time
        raise NotesRejected(why)

    def _shadow_doc(self) -> pycrdt.Doc[pycrdt.Text]:
        if self._shadow is None:
            shadow: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
            # typed as a text once: an update names a root but cannot give it a type
            shadow.get(ROOT, type=pycrdt.Text)
            shadow.apply_update(self.state())
            for u in self._pending.values():
                shadow.apply_update(u)
            self._shadow = shadow
            self._in_shadow.clear()
            self._size = len(self.state()) + sum(len(u) for u in self._pending.values())
        return self._shadow

    def settled(self, token: int, stored: bool) -> None:
        """A pending update was stored (it is applied when it comes back) or was not."""
        update = self._pending.pop(token, None)
        if not stored:
            self._shadow = None
        elif update is not None and self._shadow is not None:
            if len(self._in_shadow) >= MAX_IN_SHADOW:  # its message was lost: forget them
                self._in_shadow.clear()
            self._in_shadow.add(update)

    def apply(self, update: bytes) -> None:
        """Merge one stored update (from this node or another)."""
        self.doc.apply_update(update)
        self._state = None
        if update in self._in_shadow:
            self._in_shadow.discard(update)
        elif self._shadow is not None:
            self._shadow.apply_update(update)

    def state(self) -> bytes:
        """The whole stored document as one Yjs update."""
        if self._state is None:
            self._state = self.doc.get_update()
        return self._state

    def state_vector(self) -> bytes:
        return self.doc.get_state()

    def plain(self) -> str:
        return str(self.text)
