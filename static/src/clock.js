// The clock and timers the client's logic runs on: the real ones in the page, a fake in tests.

/** @typedef {{now(): number, setTimeout(fn: () => void, ms: number): any, clearTimeout(id: any): void, setInterval(fn: () => void, ms: number): any, clearInterval(id: any): void}} Clock */

/** @type {Clock} */
export const systemClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (id) => globalThis.clearTimeout(id),
  setInterval: (fn, ms) => globalThis.setInterval(fn, ms),
  clearInterval: (id) => globalThis.clearInterval(id),
};
