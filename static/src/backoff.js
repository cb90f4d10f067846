// Exponential backoff with jitter: the delay before the next retry.

export class Backoff {
  /**
   * @param {{minMs: number, maxMs: number, jitter?: number, random?: () => number}} opts
   * `jitter` spreads each delay by ±jitter around its base. It stays below 1/3, so every step
   * is still longer than the one before until the cap is reached.
   */
  constructor({ minMs, maxMs, jitter = 0.25, random = Math.random }) {
    this.minMs = minMs;
    this.maxMs = maxMs;
    this.jitter = jitter;
    this.random = random;
    this.failures = 0;
  }

  /** The delay before the next try; each call counts one more failure. */
  next() {
    const base = Math.min(this.maxMs, this.minMs * 2 ** this.failures);
    this.failures = Math.min(this.failures + 1, 30);
    const spread = base * (1 + this.jitter * (2 * this.random() - 1));
    return Math.round(Math.min(this.maxMs, Math.max(this.minMs, spread)));
  }

  reset() {
    this.failures = 0;
  }
}
