// NotesSync: batching local edits, the welcome's difference, and what the server could not store.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { decode, encode } from "@msgpack/msgpack";
import * as Y from "yjs";
import {
  NOTES_FLUSH_MS,
  NOTES_RESEND_MS,
  NOTES_SETTLED_MS,
  NotesSync,
  REMOTE,
} from "../src/notes-sync.js";
import { FakeClock } from "./fakes.js";

const UNAVAILABLE = { t: "error", code: "unavailable", ref: null, about: "notes", message: "not stored" };

/** The server's error for a notes update it could not store, as the client decodes it. */
function unavailableWithSv(serverDoc) {
  const frame = { ...UNAVAILABLE, sv: Y.encodeStateVector(serverDoc) };
  return decode(encode(frame)); // sv arrives as a Uint8Array, as from the wire
}

/** A document built from another's state: what the server holds. */
function copyOf(doc) {
  const copy = new Y.Doc();
  Y.applyUpdate(copy, Y.encodeStateAsUpdate(doc));
  return copy;
}

function setup({ live = true } = {}) {
  const clock = new FakeClock();
  const doc = new Y.Doc();
  const sent = [];
  const link = { live };
  const sync = new NotesSync({
    doc,
    clock,
    random: () => 0.5,
    send: (frame) => {
      if (!link.live) return false;
      sent.push(frame);
      return true;
    },
  });
  const statuses = [];
  sync.addEventListener("status", (ev) => statuses.push(ev.detail.state));
  const text = doc.getText("notes");
  return { clock, doc, text, sent, link, sync, statuses };
}

/** The text a fresh document holds after applying these frames' updates. */
function textOf(frames) {
  const doc = new Y.Doc();
  for (const f of frames) Y.applyUpdate(doc, f.u);
  return doc.getText("notes").toString();
}

describe("local edits", () => {
  test("go out at once, then merged at most every NOTES_FLUSH_MS; remote ones are not echoed", () => {
    const { clock, text, sent, sync } = setup();
    text.insert(0, "a");
    assert.equal(sent.length, 1);
    text.insert(1, "b");
    text.insert(2, "c");
    assert.equal(sent.length, 1, "held for the flush interval");
    clock.advance(NOTES_FLUSH_MS);
    assert.equal(sent.length, 2);
    assert.equal(textOf(sent), "abc");
    const other = new Y.Doc();
    other.getText("notes").insert(0, "from the peer ");
    sync.onFrame({ t: "notes", from: "u-grace", u: Y.encodeStateAsUpdate(other) });
    clock.advance(NOTES_FLUSH_MS * 4);
    assert.equal(sent.length, 2);
  });
});

describe("welcome", () => {
  test("sends, as one update, what the server's state lacks, then takes the server's", () => {
    const { text, sent, link, sync, doc } = setup({ live: false });
    text.insert(0, "typed offline. ");
    assert.equal(sent.length, 0);
    const server = new Y.Doc();
    server.getText("notes").insert(0, "From the server. ");
    link.live = true;
    sync.onWelcome(Y.encodeStateAsUpdate(server));
    assert.equal(sent.length, 1);
    Y.applyUpdate(server, sent[0].u, REMOTE);
    assert.equal(server.getText("notes").toString(), doc.getText("notes").toString());
    assert.match(doc.getText("notes").toString(), /typed offline/);
    assert.match(doc.getText("notes").toString(), /From the server/);
  });
});

describe("updates the server could not store", () => {
  test("an unavailable error without sv or welcome brings one re-send of the whole state after a short delay", () => {
    const { clock, text, sent, sync, statuses } = setup();
    text.insert(0, "hello ");
    clock.advance(NOTES_FLUSH_MS);
    text.insert(6, "world");
    clock.advance(NOTES_FLUSH_MS);
    assert.equal(sent.length, 2);
    sync.onFrame(UNAVAILABLE);
    sync.onFrame(UNAVAILABLE); // both updates failed: still one re-send
    assert.deepEqual(statuses, ["retrying"]);
    clock.advance(NOTES_RESEND_MS - 1);
    assert.equal(sent.length, 2);
    clock.advance(1);
    assert.equal(sent.length, 3);
    assert.equal(textOf([sent[2]]), "hello world", "the whole document in one update");
    clock.advance(60_000);
    assert.equal(sent.length, 3, "no loop");
    assert.deepEqual(statuses, ["retrying", "ok"]);
  });

  test("the re-send is what the server's stored document lacks, from the error's state vector", () => {
    const { clock, doc, text, sent, sync, statuses } = setup();
    // The server holds a long document; the client gets it in its welcome.
    const server = new Y.Doc();
    server.getText("notes").insert(0, "Agenda. ".repeat(4000));
    sync.onWelcome(Y.encodeStateAsUpdate(server));
    assert.equal(sent.length, 0, "nothing to add to the server's state");
    clock.advance(NOTES_FLUSH_MS);
    text.insert(0, "stored. ");
    clock.advance(NOTES_FLUSH_MS);
    text.insert(8, "lost. ");
    clock.advance(NOTES_FLUSH_MS);
    assert.equal(sent.length, 2);
    Y.applyUpdate(server, sent[0].u, REMOTE); // the first update was stored, the second was not
    sync.onFrame(unavailableWithSv(server));
    assert.deepEqual(statuses, ["retrying"]);
    clock.advance(NOTES_RESEND_MS);
    assert.equal(sent.length, 3, "one re-send");
    const resent = sent[2].u;
    const stored = copyOf(server);
    Y.applyUpdate(stored, resent, REMOTE);
    assert.equal(stored.getText("notes").toString(), text.toString());
    assert.match(text.toString(), /^stored\. lost\. Agenda\. /);
    // exactly the difference: neither the stored edit nor the welcome's long text again
    assert.equal(resent.length, Y.encodeStateAsUpdate(doc, Y.encodeStateVector(server)).length);
    assert.ok(resent.length < 100, `${resent.length} bytes`);
    const whole = Y.encodeStateAsUpdate(doc).length;
    assert.ok(resent.length * 50 < whole, `${resent.length} of ${whole} bytes`);
    clock.advance(60_000);
    assert.equal(sent.length, 3, "no loop");
    assert.deepEqual(statuses, ["retrying", "ok"]);
  });

  test("the latest error's state vector is the one used", () => {
    const { clock, doc, text, sent, sync } = setup();
    const server = new Y.Doc();
    sync.onWelcome(Y.encodeStateAsUpdate(server));
    text.insert(0, "mine ");
    clock.advance(NOTES_FLUSH_MS);
    assert.equal(sent.length, 1);
    const firstSv = Y.encodeStateVector(server);
    sync.onFrame(unavailableWithSv(server)); // "mine" was not stored
    // Meanwhile the server stores the other member's edit and relays it.
    const peer = copyOf(server);
    peer.getText("notes").insert(0, "the peer's long paragraph. ".repeat(20));
    const peerUpdate = Y.encodeStateAsUpdate(peer, firstSv);
    Y.applyUpdate(server, peerUpdate);
    sync.onFrame({ t: "notes", from: "u-grace", u: peerUpdate });
    text.insert(text.length, "more");
    clock.advance(NOTES_FLUSH_MS); // fails too
    sync.onFrame(unavailableWithSv(server));
    clock.advance(NOTES_RESEND_MS);
    assert.equal(sent.length, 3, "still one re-send");
    const resent = sent[2].u;
    const stored = copyOf(server);
    Y.applyUpdate(stored, resent, REMOTE);
    assert.equal(stored.getText("notes").toString(), text.toString());
    assert.match(text.toString(), /mine/);
    assert.match(text.toString(), /more$/);
    assert.deepEqual(resent, Y.encodeStateAsUpdate(doc, Y.encodeStateVector(server)));
    const fromFirst = Y.encodeStateAsUpdate(doc, firstSv).length;
    assert.ok(resent.length * 5 < fromFirst, `${resent.length} bytes, not the peer's edit again`);
  });

  test("without sv, the re-send is the difference from the last welcome's state", () => {
    const { clock, doc, text, sent, sync } = setup();
    const server = new Y.Doc();
    server.getText("notes").insert(0, "Agenda. ".repeat(4000));
    const welcomeNotes = Y.encodeStateAsUpdate(server);
    sync.onWelcome(welcomeNotes);
    text.insert(0, "stored. ");
    clock.advance(NOTES_FLUSH_MS);
    text.insert(8, "lost. ");
    clock.advance(NOTES_FLUSH_MS);
    Y.applyUpdate(server, sent[0].u, REMOTE);
    sync.onFrame(UNAVAILABLE);
    clock.advance(NOTES_RESEND_MS);
    assert.equal(sent.length, 3);
    const resent = sent[2].u;
    assert.deepEqual(resent, Y.encodeStateAsUpdate(doc, Y.encodeStateVectorFromUpdate(welcomeNotes)));
    const stored = copyOf(server);
    Y.applyUpdate(stored, resent, REMOTE);
    assert.equal(stored.getText("notes").toString(), text.toString());
    assert.ok(resent.length * 50 < Y.encodeStateAsUpdate(doc).length, "not the welcome's text again");
  });

  test("a rate-limited frame without ref or about re-sends the difference from the welcome", () => {
    const { clock, text, sent, sync } = setup();
    sync.onWelcome(Y.encodeStateAsUpdate(new Y.Doc()));
    text.insert(0, "maybe dropped");
    sync.onFrame({ t: "error", code: "rate_limited", ref: null, message: "slow down" });
    clock.advance(NOTES_RESEND_MS);
    assert.equal(sent.length, 2);
    assert.equal(textOf([sent[1]]), "maybe dropped");
  });

  test("nothing is re-sent when the server's state vector shows it has everything", () => {
    const { clock, doc, text, sent, sync, statuses } = setup();
    text.insert(0, "x");
    sync.onFrame(unavailableWithSv(copyOf(doc)));
    clock.advance(NOTES_RESEND_MS);
    assert.equal(sent.length, 1);
    clock.advance(NOTES_SETTLED_MS);
    assert.deepEqual(statuses, ["retrying", "ok"]);
  });

  test("a damaged state vector falls back to the difference from the welcome", () => {
    const { clock, text, sent, sync } = setup();
    sync.onWelcome(Y.encodeStateAsUpdate(new Y.Doc()));
    text.insert(0, "x");
    sync.onFrame({ ...UNAVAILABLE, sv: new Uint8Array([0xff, 0xff, 0xff]) });
    const warn = console.warn;
    console.warn = () => {};
    try {
      clock.advance(NOTES_RESEND_MS);
    } finally {
      console.warn = warn;
    }
    assert.equal(sent.length, 2);
    assert.equal(textOf([sent[1]]), "x");
  });

  test("repeated failures back off; a re-send that settles resets the delay", () => {
    const { clock, text, sent, sync } = setup();
    text.insert(0, "x");
    const delays = [];
    for (let i = 0; i < 4; i++) {
      sync.onFrame(UNAVAILABLE);
      const failedAt = clock.now();
      const before = sent.length;
      while (sent.length === before) clock.advance(1);
      delays.push(clock.now() - failedAt);
    }
    assert.deepEqual(delays, [500, 1000, 2000, 4000]);
    clock.advance(NOTES_SETTLED_MS);
    sync.onFrame(UNAVAILABLE);
    const failedAt = clock.now();
    const before = sent.length;
    while (sent.length === before) clock.advance(1);
    assert.equal(clock.now() - failedAt, NOTES_RESEND_MS);
  });

  test("a re-send due while offline is left to the next welcome", () => {
    const { clock, text, sent, link, sync } = setup();
    text.insert(0, "x");
    sync.onFrame(UNAVAILABLE);
    link.live = false;
    clock.advance(NOTES_RESEND_MS);
    assert.equal(sent.length, 1);
    link.live = true;
    sync.onWelcome(Y.encodeStateAsUpdate(new Y.Doc()));
    assert.equal(sent.length, 2);
    assert.equal(textOf([sent[1]]), "x");
    clock.advance(60_000);
    assert.equal(sent.length, 2);
  });

  test("errors about something else bring no re-send", () => {
    const { clock, text, sent, sync } = setup();
    text.insert(0, "x");
    sync.onFrame({ t: "error", code: "unavailable", ref: "chat-1", message: "busy" });
    sync.onFrame({ t: "error", code: "peer_absent", ref: null, message: "nobody" });
    clock.advance(60_000);
    assert.equal(sent.length, 1);
  });

  test("notes_rejected is shown and never retried, even with a re-send already due", () => {
    const { clock, text, sent, sync, statuses } = setup();
    text.insert(0, "x");
    sync.onFrame(UNAVAILABLE);
    sync.onFrame({ t: "error", code: "notes_rejected", ref: null, message: "too large" });
    assert.equal(statuses.at(-1), "rejected");
    assert.equal(sync.status, "rejected");
    clock.advance(60_000);
    assert.equal(sent.length, 1);
  });
});
