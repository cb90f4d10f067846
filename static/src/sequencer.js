// Durable events in seq order, each once: events after a hole are held back until it fills.
// It only keeps order; how long to wait for a hole is the connection's business.

export class EventSequencer {
  constructor() {
    this.lastSeq = 0; // every seq up to this one has been delivered
    this.knownHead = 0; // the highest seq known to exist (held events, a pong's head)
    this.held = new Map(); // seq -> event, seqs above lastSeq + 1
  }

  /** A durable event: returns the events that can be delivered now, in order (maybe none). */
  push(event) {
    const seq = event.seq;
    if (!Number.isInteger(seq) || seq <= this.lastSeq || this.held.has(seq)) return [];
    this.expect(seq);
    if (seq !== this.lastSeq + 1) {
      this.held.set(seq, event);
      return [];
    }
    const ready = [event];
    this.lastSeq = seq;
    while (this.held.has(this.lastSeq + 1)) {
      this.lastSeq += 1;
      ready.push(this.held.get(this.lastSeq));
      this.held.delete(this.lastSeq);
    }
    return ready;
  }

  /** The server says every seq up to `head` exists. */
  expect(head) {
    if (Number.isInteger(head) && head > this.knownHead) this.knownHead = head;
  }

  /** True while some seq up to the known head has not been delivered. */
  get hasGap() {
    return this.knownHead > this.lastSeq;
  }

  /** Forget what is held (the connection is gone; a resume replays it). */
  dropHeld() {
    this.held.clear();
    this.knownHead = this.lastSeq;
  }

  /** A new session: seqs start again from 1. */
  reset() {
    this.lastSeq = 0;
    this.dropHeld();
  }
}
