// The outbox beyond chats (goal, item, item_update, mark, record) and chats off the record.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { GAP_WAIT_MS } from "../src/protocol.js";
import { ME, PEER, chat, harness, memoryStorage } from "./fakes.js";

const NEW_FRAMES = [
  { t: "goal", text: "Finish chapter 3" },
  { t: "item", text: "Send the draft", owner: PEER.id, due: "2026-12-09" },
  { t: "item_update", item: "abc.4", state: "done" },
  { t: "mark", kind: "feedback", text: "Shorter intro", ref: 3 },
  { t: "record", on: false },
];

function sentOf(ws, ids) {
  return ws.sent.filter((f) => ids.includes(f.id));
}

describe("acked frames other than chat", () => {
  test("each waits in the outbox and is re-sent with its original id until acked", () => {
    const h = harness();
    const ws = h.live();
    const ids = NEW_FRAMES.map((f) => h.client.sendAcked(f));
    assert.deepEqual(
      sentOf(ws, ids),
      NEW_FRAMES.map((f, i) => ({ ...f, id: ids[i] })),
    );
    ws.receive({ t: "ack", id: ids[0], seq: 5 });
    ws.receive({ t: "ack", id: ids[4], seq: null }); // a record frame that changed nothing
    ws.serverClose(1006);
    const ws2 = h.reconnect();
    ws2.welcome({ head: 5 });
    assert.deepEqual(
      sentOf(ws2, ids),
      NEW_FRAMES.slice(1, 4).map((f, i) => ({ ...f, id: ids[i + 1] })),
      "only the unacked ones, in order, same ids",
    );
    for (const [i, id] of ids.slice(1, 4).entries()) ws2.receive({ t: "ack", id, seq: 6 + i });
    ws2.receive({ t: "ack", id: ids[1], seq: 6 }); // a retry's ack again
    assert.equal(h.client.unacked.size, 0);
    assert.deepEqual(h.seen.acks, [
      { id: ids[0], seq: 5, t: "goal" },
      { id: ids[4], seq: null, t: "record" },
      { id: ids[1], seq: 6, t: "item" },
      { id: ids[2], seq: 7, t: "item_update" },
      { id: ids[3], seq: 8, t: "mark" },
    ]);
    ws2.serverClose(1006);
    const ws3 = h.reconnect();
    ws3.welcome({ head: 8 });
    assert.deepEqual(sentOf(ws3, ids), [], "nothing left to re-send");
  });

  test("frames written while offline wait for the welcome", () => {
    const h = harness();
    h.client.start();
    const id = h.client.sendAcked({ t: "goal", text: "Plan the talk" });
    h.socket.open();
    assert.deepEqual(h.socket.frames("goal"), []);
    h.socket.welcome();
    assert.deepEqual(h.socket.frames("goal"), [{ t: "goal", id, text: "Plan the talk" }]);
  });

  test("its own event acks it when it comes before the ack", () => {
    const h = harness();
    const ws = h.live();
    const id = h.client.sendAcked({ t: "item", text: "Read the paper", owner: ME.id, due: null });
    const item = { id: "s1.1", text: "Read the paper", owner: ME.id, due: null, state: "open", by: ME.id };
    ws.receive({ t: "item", seq: 1, id, by: ME.id, item, ts: 1 });
    ws.receive({ t: "ack", id, seq: 1 });
    assert.deepEqual(h.seen.acks, [{ id, seq: 1, t: "item" }]);
    assert.equal(h.client.unacked.size, 0);
  });

  test("another member's event with the same id does not ack ours", () => {
    const h = harness();
    const ws = h.live();
    const id = h.client.sendAcked({ t: "goal", text: "mine" });
    ws.receive({ t: "goal", seq: 1, id, by: PEER.id, text: "theirs", ts: 1 });
    assert.equal(h.client.unacked.size, 1);
    assert.deepEqual(h.seen.acks, []);
  });

  test("invalid is final and reported; unavailable is retried with the same frame", () => {
    const h = harness();
    const failed = [];
    const chatFailed = [];
    h.client.addEventListener("send-failed", (ev) => failed.push(ev.detail));
    h.client.addEventListener("chat-failed", (ev) => chatFailed.push(ev.detail));
    const ws = h.live();
    const bad = h.client.sendAcked({ t: "item_update", item: "not-ours", state: "done" });
    const busy = h.client.sendAcked({ t: "mark", kind: "learning", text: "x", ref: null });
    ws.receive({ t: "error", code: "invalid", ref: bad, message: "unknown item" });
    ws.receive({ t: "error", code: "unavailable", ref: busy, message: "try later" });
    assert.deepEqual(failed, [
      {
        id: bad,
        t: "item_update",
        frame: { t: "item_update", id: bad, item: "not-ours", state: "done" },
        message: "unknown item",
        reason: "invalid",
      },
    ]);
    assert.deepEqual(chatFailed, [], "v1's chat-failed stays for chats");
    h.clock.advance(1000);
    assert.deepEqual(
      ws.frames("mark").map((f) => f.id),
      [busy, busy],
    );
    ws.serverClose(1006);
    const ws2 = h.reconnect();
    ws2.welcome();
    assert.deepEqual(ws2.frames("item_update"), [], "a refused frame is not re-sent");
    assert.deepEqual(ws2.frames("mark").map((f) => f.id), [busy]);
  });

  test("the outbox survives a reload, frames and v1's saved chats alike", () => {
    const storage = memoryStorage();
    const before = harness({ storage });
    before.live();
    const goal = before.client.sendAcked({ t: "goal", text: "Ship it" });
    const said = before.client.sendChat("hello");
    const after = harness({ storage });
    after.live();
    assert.deepEqual(after.socket.sent.slice(1), [
      { t: "goal", id: goal, text: "Ship it" },
      { t: "chat", id: said, text: "hello" },
    ]);

    const v1 = memoryStorage();
    v1.save({ sessionId: "s1", unacked: [{ id: "old-1", text: "from v1" }] });
    const h = harness({ storage: v1 });
    h.live();
    assert.deepEqual(h.socket.frames("chat"), [{ t: "chat", id: "old-1", text: "from v1" }]);
  });

  test("not an acked frame: refused before it reaches the outbox", () => {
    const h = harness();
    h.live();
    assert.throws(() => h.client.sendAcked({ t: "typing", on: true }));
    assert.equal(h.client.unacked.size, 0);
  });

  test("after a session ended: items and their updates go to the new one, the rest is dropped", async () => {
    const h = harness();
    let orphans = null;
    h.client.addEventListener("orphans", (ev) => {
      orphans = ev.detail;
    });
    const ws = h.live();
    const goal = h.client.sendAcked({ t: "goal", text: "old session's goal" });
    const item = h.client.sendAcked({ t: "item", text: "carry me", owner: PEER.id, due: null });
    const update = h.client.sendAcked({ t: "item_update", item: "x.1", state: "done" });
    const mark = h.client.sendAcked({ t: "mark", kind: "decision", text: "yes", ref: null });
    ws.serverClose(1006);
    const ws2 = h.reconnect();
    ws2.welcome({ session_id: "s2" });
    await new Promise((resolve) => setImmediate(resolve)); // the transcript fetch (fails here)
    assert.deepEqual(
      orphans.resend.map((o) => o.id),
      [item, update],
    );
    assert.deepEqual(
      orphans.dropped.map((o) => o.id),
      [goal, mark],
    );
    assert.deepEqual(
      ws2.sent.slice(1).map((f) => f.id),
      [item, update],
    );
    assert.deepEqual(Array.from(h.client.unacked.keys()), [item, update]);
  });
});

describe("off the record", () => {
  const offChat = (fields = {}) => ({ t: "chat", id: "o1", from: PEER.id, text: "between us", ts: 5, off: true, ...fields });

  test("an off-the-record chat has no seq: a live frame, outside the seq order, no gap", () => {
    const h = harness();
    const ws = h.live({ record: "off" });
    ws.receive(chat(1));
    ws.receive(offChat());
    ws.receive(chat(2));
    assert.deepEqual(h.seqs(), [1, 2]);
    assert.deepEqual(
      h.seen.frames.filter((f) => f.t === "chat"),
      [offChat()],
    );
    assert.equal(h.client.lastSeq, 2);
    h.clock.advance(GAP_WAIT_MS * 2);
    assert.equal(h.sockets.length, 1, "no resume");
  });

  test("its ack has seq null and off: the chat leaves the outbox and is not re-sent", () => {
    const h = harness();
    const ws = h.live({ record: "off", record_by: PEER.id });
    const id = h.client.sendChat("not for the record");
    assert.equal(h.client.unacked.get(id).off, true);
    ws.receive({ t: "ack", id, seq: null, off: true });
    assert.deepEqual(h.seen.acks, [{ id, seq: null, t: "chat", off: true }]);
    assert.equal(h.client.unacked.size, 0);
    assert.equal(h.client.lastSeq, 0);
    ws.serverClose(1006);
    const ws2 = h.reconnect();
    ws2.welcome({ record: "off", record_by: PEER.id });
    assert.deepEqual(ws2.frames("chat"), [], "acked: never sent again");
  });

  test("its relay to the sender acks it too, once", () => {
    const h = harness();
    const ws = h.live({ record: "off" });
    const id = h.client.sendChat("quietly");
    ws.receive({ t: "chat", id, from: ME.id, text: "quietly", ts: 7, off: true });
    ws.receive({ t: "ack", id, seq: null, off: true });
    assert.deepEqual(h.seen.acks, [{ id, seq: null, t: "chat", off: true }]);
    assert.equal(h.client.unacked.size, 0);
  });

  test("unacked and still off after a reconnect: sent again with its id", () => {
    const h = harness();
    const ws = h.live({ record: "off" });
    const id = h.client.sendChat("did it arrive?");
    ws.serverClose(1006);
    const ws2 = h.reconnect();
    ws2.welcome({ record: "off" });
    assert.deepEqual(ws2.frames("chat"), [{ t: "chat", id, text: "did it arrive?" }]);
  });

  test("unacked when recording came back on: never sent on the record", () => {
    const h = harness();
    const failed = [];
    h.client.addEventListener("send-failed", (ev) => failed.push(ev.detail));
    const ws = h.live({ record: "off" });
    const off = h.client.sendChat("only off the record");
    ws.receive({ t: "record", seq: 1, id: "r", by: PEER.id, state: "on", ts: 9 });
    const on = h.client.sendChat("on the record");
    assert.equal(h.client.unacked.get(on).off, false);
    ws.serverClose(1006);
    const ws2 = h.reconnect();
    ws2.welcome({ record: "on", head: 1 });
    assert.deepEqual(ws2.frames("chat").map((f) => f.id), [on]);
    assert.deepEqual(
      failed.map((f) => [f.id, f.reason]),
      [[off, "record-on"]],
    );
  });

  test("the client follows the recording state from the welcome and the record events", () => {
    const h = harness();
    const ws = h.live();
    assert.equal(h.client.record, "on");
    ws.receive({ t: "record", seq: 1, by: PEER.id, state: "requested", ts: 1 });
    assert.equal(h.client.record, "requested");
    ws.receive({ t: "record", seq: 2, by: ME.id, state: "off", ts: 2 });
    assert.equal(h.client.record, "off");
    ws.serverClose(1006);
    const ws2 = h.reconnect();
    ws2.welcome({ head: 3, record: "on", record_by: PEER.id });
    assert.equal(h.client.record, "on");
  });
});
