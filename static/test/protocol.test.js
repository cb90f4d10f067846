// RoomClient: welcome, resume, seq order, void, gaps, backoff and the chat outbox.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  GAP_WAIT_MS,
  HEALTHY_AFTER_MS,
  RECONNECT_MAX_MS,
  RECONNECT_MIN_MS,
  SUBPROTOCOL,
} from "../src/protocol.js";
import { ME, PEER, chat, harness, memoryStorage } from "./fakes.js";

describe("welcome", () => {
  test("the first hello carries the token and no resume; the welcome makes the client live", () => {
    const h = harness();
    h.client.start();
    assert.equal(h.sockets.length, 1);
    const ws = h.socket;
    assert.equal(ws.url, "ws://test/ws/rooms/p1");
    assert.deepEqual(ws.protocols, [SUBPROTOCOL]);
    ws.open();
    assert.deepEqual(ws.sent, [{ t: "hello", token: "tok" }]);
    assert.equal(h.client.state, "connecting");
    ws.welcome({ head: 4 });
    assert.equal(h.client.state, "live");
    assert.equal(h.client.live, true);
    assert.equal(h.client.sessionId, "s1");
    assert.equal(h.client.head, 4);
    assert.deepEqual(h.client.user, ME);
    assert.equal(h.seen.welcomes.length, 1);
    const { firstWelcome, newSession, welcome } = h.seen.welcomes[0];
    assert.equal(firstWelcome, true);
    assert.equal(newSession, false);
    assert.deepEqual(welcome.peers, [PEER]);
  });

  test("a reconnect resumes from the last seq and drops what the replay repeats", () => {
    const h = harness();
    const ws = h.live({ head: 0 });
    ws.receive(chat(1));
    ws.receive(chat(2));
    ws.serverClose(1006);
    const ws2 = h.reconnect();
    assert.deepEqual(ws2.sent[0], { t: "hello", token: "tok", resume: { session_id: "s1", last_seq: 2 } });
    ws2.welcome({ head: 3 });
    assert.equal(h.seen.welcomes[1].firstWelcome, false);
    assert.equal(h.seen.welcomes[1].newSession, false);
    ws2.receive(chat(2)); // replayed again: already shown
    ws2.receive(chat(3));
    assert.deepEqual(h.seqs(), [1, 2, 3]);
  });

  test("a welcome of another session starts seqs over and says so", () => {
    const h = harness();
    const ws = h.live();
    ws.receive(chat(1));
    ws.receive(chat(2));
    ws.serverClose(1006);
    const ws2 = h.reconnect();
    ws2.welcome({ session_id: "s2", head: 1 });
    assert.equal(h.seen.welcomes[1].newSession, true);
    assert.equal(h.seen.welcomes[1].previousSessionId, "s1");
    assert.equal(h.client.lastSeq, 0);
    ws2.receive(chat(1, { id: "new-1" }));
    assert.deepEqual(h.seqs(), [1, 2, 1]);
    assert.equal(h.seen.events[2].id, "new-1");
  });
});

describe("order and de-duplication", () => {
  test("events arrive once each, in seq order, whatever order the socket brings them in", () => {
    const h = harness();
    const ws = h.live();
    for (const seq of [1, 3, 2, 2, 1, 3, 5, 4, 5]) ws.receive(chat(seq));
    assert.deepEqual(h.seqs(), [1, 2, 3, 4, 5]);
    assert.equal(h.client.lastSeq, 5);
    assert.equal(h.sockets.length, 1);
  });

  test("live frames without a seq pass straight through", () => {
    const h = harness();
    const ws = h.live();
    ws.receive({ t: "typing", from: PEER.id, on: true });
    ws.receive({ t: "chat", id: "x", from: PEER.id, text: "off", ts: 1, off: true });
    assert.deepEqual(
      h.seen.frames.map((f) => f.t),
      ["typing", "chat"],
    );
    assert.deepEqual(h.seen.events, []);
  });
});

describe("void", () => {
  test("a void moves the last seq on and is never delivered", () => {
    const h = harness();
    const ws = h.live();
    ws.receive(chat(1));
    ws.receive({ t: "void", seq: 2, ts: 1700000002 });
    ws.receive(chat(3));
    assert.deepEqual(h.seqs(), [1, 3]);
    assert.equal(h.client.lastSeq, 3);
    h.clock.advance(GAP_WAIT_MS * 2);
    assert.equal(h.sockets.length, 1, "no gap, no reconnect");
    assert.equal(ws.closed, false);
  });

  test("a void that fills a hole releases the events held behind it", () => {
    const h = harness();
    const ws = h.live();
    ws.receive(chat(1));
    ws.receive(chat(3));
    assert.deepEqual(h.seqs(), [1]);
    ws.receive({ t: "void", seq: 2, ts: 1 });
    assert.deepEqual(h.seqs(), [1, 3]);
    h.clock.advance(GAP_WAIT_MS * 2);
    assert.equal(ws.closed, false);
  });

  test("a resume after a void asks from the void's seq", () => {
    const h = harness();
    const ws = h.live();
    ws.receive(chat(1));
    ws.receive({ t: "void", seq: 2, ts: 1 });
    ws.serverClose(1006);
    const ws2 = h.reconnect();
    assert.deepEqual(ws2.sent[0].resume, { session_id: "s1", last_seq: 2 });
  });
});

describe("gaps", () => {
  test("a gap that fills within the wait is delivered in order, with no reconnect", () => {
    const h = harness();
    const ws = h.live();
    ws.receive(chat(1));
    ws.receive(chat(3));
    ws.receive(chat(4));
    assert.deepEqual(h.seqs(), [1], "3 and 4 are held back");
    h.clock.advance(GAP_WAIT_MS - 100);
    ws.receive(chat(2));
    assert.deepEqual(h.seqs(), [1, 2, 3, 4]);
    h.clock.advance(HEALTHY_AFTER_MS);
    assert.equal(ws.closed, false);
    assert.equal(h.sockets.length, 1);
  });

  test("a gap that does not fill: one resume after the wait, from the last seq delivered", () => {
    const h = harness();
    const ws = h.live();
    ws.receive(chat(1));
    ws.receive(chat(3));
    h.clock.advance(GAP_WAIT_MS - 1);
    assert.equal(ws.closed, false, "still waiting for 2");
    h.clock.advance(1);
    assert.equal(ws.closed, true);
    assert.equal(ws.closedWith.code, 4000);
    assert.equal(h.client.state, "reconnecting");
    // The resume waits for the backoff: never at once.
    h.clock.advance(RECONNECT_MIN_MS - 1);
    assert.equal(h.sockets.length, 1);
    h.clock.advance(1);
    assert.equal(h.sockets.length, 2);
    const ws2 = h.socket;
    ws2.open();
    assert.deepEqual(ws2.frames("hello"), [
      { t: "hello", token: "tok", resume: { session_id: "s1", last_seq: 1 } },
    ]);
    ws2.welcome({ head: 3 });
    ws2.receive({ t: "void", seq: 2, ts: 1 });
    ws2.receive(chat(3));
    assert.deepEqual(h.seqs(), [1, 3], "3 once, after the hole is known to be a void");
    h.clock.advance(HEALTHY_AFTER_MS);
    assert.equal(h.sockets.length, 2, "exactly one resume");
    assert.equal(ws2.closed, false);
  });

  test("a hole that stays: resumes back off, each wait longer, never below the minimum", () => {
    const h = harness();
    let ws = h.live();
    ws.receive(chat(1));
    const delays = [];
    for (let round = 0; round < 8; round++) {
      ws.receive(chat(3)); // the server keeps a hole at 2
      h.clock.advance(GAP_WAIT_MS);
      assert.equal(ws.closed, true, `round ${round}: resumed after the wait`);
      const closedAt = h.clock.now();
      assert.equal(h.clock.pending, 1, "only the reconnect is pending");
      const before = h.sockets.length;
      while (h.sockets.length === before) h.clock.advance(1);
      delays.push(h.clock.now() - closedAt);
      ws = h.socket;
      ws.open();
      assert.equal(ws.sent[0].resume.last_seq, 1);
      ws.welcome({ head: 3 });
    }
    assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]);
    assert.deepEqual(h.seqs(), [1]);
  });

  test("with real jitter the delays still grow and stay within bounds", () => {
    const h = harness({ random: Math.random });
    let ws = h.live();
    const delays = [];
    for (let round = 0; round < 7; round++) {
      ws.receive(chat(2));
      h.clock.advance(GAP_WAIT_MS);
      const closedAt = h.clock.now();
      const before = h.sockets.length;
      while (h.sockets.length === before) h.clock.advance(1);
      delays.push(h.clock.now() - closedAt);
      ws = h.socket;
      ws.open();
      ws.welcome({ head: 2 });
    }
    for (const [i, delay] of delays.entries()) {
      assert.ok(delay >= RECONNECT_MIN_MS && delay <= RECONNECT_MAX_MS, `${delay} in bounds`);
      if (i > 0 && delays[i - 1] < RECONNECT_MAX_MS * 0.75) assert.ok(delay > delays[i - 1], `${delays}`);
    }
  });

  test("the wait starts over while the hole moves forward", () => {
    const h = harness();
    const ws = h.live();
    ws.receive(chat(1));
    ws.receive(chat(4));
    h.clock.advance(GAP_WAIT_MS - 100);
    ws.receive(chat(2)); // progress: 3 is still missing
    h.clock.advance(GAP_WAIT_MS - 100);
    assert.equal(ws.closed, false);
    ws.receive(chat(3));
    assert.deepEqual(h.seqs(), [1, 2, 3, 4]);
    h.clock.advance(GAP_WAIT_MS * 2);
    assert.equal(ws.closed, false);
  });

  test("a pong whose head is past the last seq is a gap too", () => {
    const h = harness();
    const ws = h.live();
    ws.receive(chat(1));
    ws.receive({ t: "pong", head: 2 });
    h.clock.advance(GAP_WAIT_MS - 1);
    ws.receive(chat(2)); // it was on its way
    h.clock.advance(GAP_WAIT_MS);
    assert.equal(ws.closed, false);
    ws.receive({ t: "pong", head: 3 });
    h.clock.advance(GAP_WAIT_MS - 1);
    assert.equal(ws.closed, false);
    h.clock.advance(1);
    assert.equal(ws.closed, true);
    const ws2 = h.reconnect();
    assert.deepEqual(ws2.sent[0].resume, { session_id: "s1", last_seq: 2 });
    assert.deepEqual(h.seqs(), [1, 2]);
    assert.deepEqual(h.seen.frames, [], "pongs are not passed on");
  });

  test("a pong at the last seq changes nothing", () => {
    const h = harness();
    const ws = h.live();
    ws.receive(chat(1));
    ws.receive({ t: "pong", head: 1 });
    h.clock.advance(GAP_WAIT_MS * 2);
    assert.equal(ws.closed, false);
  });
});

describe("reconnect backoff", () => {
  test("failed connects back off; a connection healthy for a while resets the backoff", () => {
    const h = harness();
    h.client.start();
    const delays = [];
    const failOnce = () => {
      h.socket.serverClose(1006);
      const closedAt = h.clock.now();
      const before = h.sockets.length;
      while (h.sockets.length === before) h.clock.advance(1);
      delays.push(h.clock.now() - closedAt);
    };
    failOnce();
    failOnce();
    failOnce();
    assert.deepEqual(delays, [500, 1000, 2000]);
    // Welcomed but gone after 2 s: not healthy, the backoff keeps growing.
    h.socket.open();
    h.socket.welcome();
    h.clock.advance(2000);
    failOnce();
    assert.equal(delays.at(-1), 4000);
    // Welcomed and alive for HEALTHY_AFTER_MS: the next drop starts from the minimum again.
    h.socket.open();
    h.socket.welcome();
    h.clock.advance(HEALTHY_AFTER_MS);
    failOnce();
    assert.equal(delays.at(-1), RECONNECT_MIN_MS);
  });

  test("a socket that never answers is dropped after the connect timeout and retried", () => {
    const h = harness();
    h.client.start();
    h.socket.open(); // no welcome
    h.clock.advance(10000);
    assert.equal(h.sockets[0].closed, true);
    h.clock.advance(RECONNECT_MIN_MS);
    assert.equal(h.sockets.length, 2);
  });

  test("no pong within the deadline drops the socket", () => {
    const h = harness();
    const ws = h.live();
    h.clock.advance(15000);
    assert.deepEqual(ws.frames("ping"), [{ t: "ping" }]);
    h.clock.advance(8000);
    assert.equal(ws.closed, true);
  });

  test("4429 waits the longest delay", () => {
    const h = harness();
    h.live().serverClose(4429);
    h.clock.advance(RECONNECT_MAX_MS - 1);
    assert.equal(h.sockets.length, 1);
    h.clock.advance(1);
    assert.equal(h.sockets.length, 2);
  });

  test("fatal close codes stop for good", () => {
    for (const code of [4401, 4403, 4409]) {
      const h = harness();
      h.live().serverClose(code);
      assert.equal(h.client.state, "failed");
      assert.equal(h.seen.fatal[0].code, code);
      h.clock.advance(RECONNECT_MAX_MS * 4);
      assert.equal(h.sockets.length, 1);
    }
  });

  test("after the ended event, the server's close 1000 ends it: no reconnect", () => {
    const h = harness();
    const ended = [];
    h.client.addEventListener("ended", (ev) => ended.push(ev.detail));
    const ws = h.live();
    ws.receive({ t: "ended", seq: 1, by: PEER.id, ts: 1 });
    assert.equal(ended.length, 1);
    ws.serverClose(1000);
    assert.equal(h.client.state, "ended");
    h.clock.advance(RECONNECT_MAX_MS * 4);
    assert.equal(h.sockets.length, 1);
    assert.equal(h.clock.pending, 0, "no timer left running");
  });
});

describe("chat outbox", () => {
  test("unacked chats are re-sent with their original ids after a reconnect, and acked once", () => {
    const h = harness();
    h.client.start();
    const first = h.client.sendChat("written before the welcome");
    h.socket.open();
    assert.deepEqual(h.socket.frames("chat"), [], "not live yet: nothing sent");
    h.socket.welcome();
    const second = h.client.sendChat("written while live");
    assert.deepEqual(
      h.socket.frames("chat").map((f) => f.id),
      [first, second],
    );
    h.socket.serverClose(1006); // before any ack
    const ws2 = h.reconnect();
    ws2.welcome();
    assert.deepEqual(ws2.frames("chat"), [
      { t: "chat", id: first, text: "written before the welcome" },
      { t: "chat", id: second, text: "written while live" },
    ]);
    ws2.receive({ t: "ack", id: first, seq: 1 });
    ws2.receive({ t: "ack", id: first, seq: 1 }); // the retry's ack: the same one again
    ws2.receive({ t: "chat", seq: 1, id: first, from: ME.id, text: "written before the welcome", ts: 1 });
    ws2.receive({ t: "chat", seq: 2, id: second, from: ME.id, text: "written while live", ts: 2 });
    ws2.receive({ t: "ack", id: second, seq: 2 });
    assert.deepEqual(h.seen.acks, [
      { id: first, seq: 1, t: "chat" },
      { id: second, seq: 2, t: "chat" },
    ]);
    assert.deepEqual(h.seqs(), [1, 2]);
    assert.equal(h.client.unacked.size, 0);
    ws2.serverClose(1006);
    const ws3 = h.reconnect();
    ws3.welcome({ head: 2 });
    assert.deepEqual(ws3.frames("chat"), [], "nothing left to re-send");
  });

  test("unacked chats survive a reload through storage", () => {
    const storage = memoryStorage();
    const before = harness({ storage });
    before.live();
    before.client.sendChat("unsure it arrived");
    const [{ id }] = before.socket.frames("chat");
    const after = harness({ storage });
    after.live(); // the same session
    assert.deepEqual(after.socket.frames("chat"), [{ t: "chat", id, text: "unsure it arrived" }]);
  });

  test("a chat refused as invalid is dropped; one refused for now is retried with its id", () => {
    const h = harness();
    const failed = [];
    h.client.addEventListener("chat-failed", (ev) => failed.push(ev.detail));
    const ws = h.live();
    const bad = h.client.sendChat("x".repeat(5000));
    const busy = h.client.sendChat("hello");
    ws.receive({ t: "error", code: "invalid", ref: bad, message: "too long" });
    ws.receive({ t: "error", code: "unavailable", ref: busy, message: "try later" });
    assert.deepEqual(failed, [{ id: bad, message: "too long" }]);
    h.clock.advance(1000);
    assert.deepEqual(
      ws.frames("chat").map((f) => f.id),
      [bad, busy, busy],
    );
  });
});
