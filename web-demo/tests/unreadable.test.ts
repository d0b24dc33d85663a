// The page's explanation of messages it cannot read (src/unreadable.ts), in Node with node:test:
// the same cases and the same sentences as the Rust client's unit tests in
// client/src/unreadable.rs. client/tests/web_demo runs it.

import { strict as assert } from "node:assert";
import { test } from "node:test";

import { type UnreadableRun, unreadableRuns, unreadableText } from "../src/unreadable";

const run = (first: number, last: number, before: boolean): UnreadableRun => ({
  firstSequence: first,
  lastSequence: last,
  count: last - first + 1,
  beforeThisDevice: before,
});

test("a device that reads nothing sees every message as earlier", () => {
  assert.deepEqual(unreadableRuns([], true, 3), [run(1, 3, true)]);
  assert.deepEqual(unreadableRuns([], true, 0), []);
});

test("runs before, between and after the readable messages are found, in any order given", () => {
  assert.deepEqual(unreadableRuns([8, 4, 5], true, 10), [run(1, 3, true), run(6, 7, false), run(9, 10, false)]);
});

test("an incomplete listing says nothing about what precedes it", () => {
  assert.deepEqual(unreadableRuns([4, 6], false), [run(5, 5, false)]);
  assert.deepEqual(unreadableRuns([1, 2], true, 2), []);
});

test("the explanation is the CLI's sentence", () => {
  assert.equal(
    unreadableText(run(1, 3, true)),
    "3 earlier messages were sent before this device existed and cannot be read here (they were not encrypted for it)",
  );
  assert.equal(unreadableText(run(2, 2, false)), "1 message was not encrypted for this device and cannot be read here");
});
