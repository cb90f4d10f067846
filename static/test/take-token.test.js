// The token leaves the URL (issue 10, item 6): kept per tab in sessionStorage, stripped with
// history.replaceState, and found again on a reload without it.
import assert from "node:assert/strict";
import { test } from "node:test";
import { takeToken } from "../src/protocol.js";

function fakeWindow() {
  const store = new Map();
  const replaced = [];
  globalThis.window = {
    sessionStorage: {
      getItem: (k) => (store.has(k) ? store.get(k) : null),
      setItem: (k, v) => store.set(k, String(v)),
    },
    history: { state: null, replaceState: (state, title, url) => replaced.push(url) },
  };
  return { store, replaced };
}

const loc = (hash, pathname = "/rooms/p1") => ({ hash, pathname, search: "" });

test("a token in the fragment is kept and taken out of the URL", () => {
  const { store, replaced } = fakeWindow();
  assert.equal(takeToken("pair:p1", loc("#token=abc.def")), "abc.def");
  assert.equal(store.get("menteo.token.pair:p1"), "abc.def");
  assert.deepEqual(replaced, ["/rooms/p1"]);
  // a reload: no fragment, the kept token
  assert.equal(takeToken("pair:p1", loc("")), "abc.def");
  assert.equal(replaced.length, 1);
  // another pair has none
  assert.equal(takeToken("pair:p2", loc("", "/rooms/p2")), "");
});

test("the rest of the fragment (a place in the page) stays", () => {
  const { replaced } = fakeWindow();
  assert.equal(takeToken("session:s1", loc("#token=t1&at=seq-42", "/sessions/s1")), "t1");
  assert.deepEqual(replaced, ["/sessions/s1#at=seq-42"]);
  takeToken("session:s1", loc("#token=t2&seq-7", "/sessions/s1"));
  assert.equal(replaced[1], "/sessions/s1#seq-7");
});

test("a newer link's token replaces the kept one", () => {
  const { store } = fakeWindow();
  takeToken("pair:p1", loc("#token=old"));
  assert.equal(takeToken("pair:p1", loc("#token=new")), "new");
  assert.equal(store.get("menteo.token.pair:p1"), "new");
  delete globalThis.window;
});
