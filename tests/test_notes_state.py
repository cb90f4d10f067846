"""The room's notes state (:class:`rooms.notes.Notes`) on its own: an update checked here and
stored is merged into the checking copy once, and a copy rebuilt meanwhile still gets it."""

from __future__ import annotations

import pycrdt
import pytest

from rooms.errors import NotesRejected
from rooms.notes import Notes


class Editor:
    """A member's Yjs document: each edit as the update an editor sends."""

    def __init__(self) -> None:
        self.doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
        self.text = self.doc.get("notes", type=pycrdt.Text)

    def type(self, piece: str) -> bytes:
        state = self.doc.get_state()
        self.text.insert(len(self.text), piece)
        return self.doc.get_update(state)


def test_a_stored_local_update_is_merged_into_the_checking_copy_once() -> None:
    notes, editor = Notes(), Editor()
    for token, piece in enumerate(["Agenda. ", "Goals. ", "Next steps."], start=1):
        update = editor.type(piece)
        notes.check(token, update)
        notes.settled(token, stored=True)
        assert notes._in_shadow == {update}  # its merge back will skip the checking copy
        notes.apply(update)  # the update comes back from the broker
        assert notes._in_shadow == set()
    assert notes.plain() == "Agenda. Goals. Next steps."
    assert notes._shadow is not None and notes._shadow.get_state() == notes.state_vector()


def test_a_copy_rebuilt_before_the_update_comes_back_still_gets_it() -> None:
    notes, editor = Notes(), Editor()
    first = editor.type("Agenda. ")
    notes.check(1, first)
    notes.settled(1, stored=True)
    with pytest.raises(NotesRejected):
        notes.check(2, b"not a Yjs update")  # the checking copy is dropped...
    notes.check(3, Editor().type("Another member's line. "))  # ...and rebuilt without `first`
    notes.apply(first)
    notes.check(4, editor.type("Builds on the agenda."))  # refused if the copy lacked `first`
