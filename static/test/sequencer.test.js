// EventSequencer and Backoff: the two small pieces the connection is built on.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Backoff } from "../src/backoff.js";
import { EventSequencer } from "../src/sequencer.js";

const ev = (seq) => ({ t: "chat", seq });
const seqs = (events) => events.map((e) => e.seq);

describe("EventSequencer", () => {
  test("delivers in order, holds events after a hole, drops repeats", () => {
    const s = new EventSequencer();
    assert.deepEqual(seqs(s.push(ev(1))), [1]);
    assert.deepEqual(seqs(s.push(ev(3))), []);
    assert.equal(s.hasGap, true);
    assert.deepEqual(seqs(s.push(ev(3))), [], "a held event is held once");
    assert.deepEqual(seqs(s.push(ev(1))), []);
    assert.deepEqual(seqs(s.push(ev(2))), [2, 3]);
    assert.equal(s.hasGap, false);
    assert.equal(s.lastSeq, 3);
  });

  test("a head past the last seq is a gap until it is reached", () => {
    const s = new EventSequencer();
    s.push(ev(1));
    s.expect(2);
    assert.equal(s.hasGap, true);
    s.expect(1); // never moves back
    assert.equal(s.hasGap, true);
    s.push(ev(2));
    assert.equal(s.hasGap, false);
  });

  test("dropHeld forgets held events but keeps the last seq; reset starts over", () => {
    const s = new EventSequencer();
    s.push(ev(1));
    s.push(ev(4));
    s.dropHeld();
    assert.equal(s.hasGap, false);
    assert.equal(s.lastSeq, 1);
    assert.deepEqual(seqs(s.push(ev(2))), [2], "4 is no longer held");
    s.reset();
    assert.equal(s.lastSeq, 0);
    assert.deepEqual(seqs(s.push(ev(1))), [1]);
  });

  test("ignores events without an integer seq", () => {
    const s = new EventSequencer();
    assert.deepEqual(s.push({ t: "chat", seq: null }), []);
    assert.deepEqual(s.push({ t: "chat", seq: 1.5 }), []);
    assert.equal(s.lastSeq, 0);
  });
});

describe("Backoff", () => {
  test("doubles from the minimum up to the maximum; reset starts over", () => {
    const b = new Backoff({ minMs: 500, maxMs: 15000, random: () => 0.5 });
    const delays = Array.from({ length: 8 }, () => b.next());
    assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]);
    b.reset();
    assert.equal(b.next(), 500);
  });

  test("jitter never goes below the minimum or above the maximum, and steps still grow", () => {
    for (const r of [0, 0.25, 0.999]) {
      const b = new Backoff({ minMs: 500, maxMs: 15000, random: () => r });
      const delays = Array.from({ length: 10 }, () => b.next());
      for (const d of delays) assert.ok(d >= 500 && d <= 15000, `${d}`);
      for (let i = 1; i < delays.length; i++) assert.ok(delays[i] >= delays[i - 1], `${delays}`);
    }
  });
});
