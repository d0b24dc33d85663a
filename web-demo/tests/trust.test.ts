// The page's trust decisions (src/trust.ts), in Node with node:test: the same cases as the Rust
// client's unit tests in client/src/contacts.rs and profile.rs. client/tests/web_demo runs it.

import { strict as assert } from "node:assert";
import { test } from "node:test";

import type { Contact, Pin } from "../src/store";
import { accept, recordSeen, review, senderKey, trusted, upgradeContacts } from "../src/trust";

const pin = (encryption: string, signing: string): Pin => ({
  encryption,
  signing,
  signingKey: `key-${signing}`,
  firstSeenAt: 1,
});
const contact = (keys: Record<string, Pin>, verified = false): Contact => ({ keys, pending: {}, verified });
const listed = (devices: Record<string, Pin>) => new Map(Object.entries(devices));

test("a device with other keys is pending for any contact and reported once", () => {
  const bob = contact({ d1: pin("e1", "s1") });
  const substituted = listed({ d1: pin("mallory", "s1") });

  const first = review(bob, substituted, 5);
  const again = review(bob, substituted, 6);

  assert.deepEqual(first, { changes: ["a device's keys changed"], blocked: true });
  assert.deepEqual(again.changes, []);
  assert.equal(bob.keys.d1.encryption, "e1", "the pin stays");
  assert.equal(trusted(bob, "d1", pin("mallory", "s1")), false);
  assert.equal(senderKey(bob, "d1", 7), "key-s1", "only the pinned key verifies");
});

test("a new device is pinned for an unverified contact and pending for a verified one", () => {
  const withGhost = listed({ d1: pin("e1", "s1"), d2: pin("e2", "s2") });
  const unverified = contact({ d1: pin("e1", "s1") });
  const verified = contact({ d1: pin("e1", "s1") }, true);

  const pinned = review(unverified, withGhost, 5);
  const stopped = review(verified, withGhost, 5);

  assert.deepEqual(pinned, { changes: ["a new device was added"], blocked: false });
  assert.equal(trusted(unverified, "d2", pin("e2", "s2")), true);
  assert.deepEqual(stopped, { changes: ["a new device was added"], blocked: true });
  assert.equal(trusted(verified, "d1", pin("e1", "s1")), false, "nothing is sealed for the user");
  assert.throws(() => senderKey(verified, "d2", 5), /not accepted/);
  accept(verified, withGhost, false, 6);
  assert.equal(trusted(verified, "d2", pin("e2", "s2")), true);
  assert.equal(verified.verified, false);
});

test("a device gone is revoked from then, its later messages refused, its return pending", () => {
  const bob = contact({ d1: pin("e1", "s1"), d2: pin("e2", "s2") });

  const gone = review(bob, listed({ d1: pin("e1", "s1") }), 7);

  assert.deepEqual(gone.changes, ["a device was removed"]);
  assert.equal(senderKey(bob, "d2", 6), "key-s2");
  assert.equal(senderKey(bob, "d2", 7), "key-s2", "the second of the revocation: benefit of the doubt");
  assert.throws(() => senderKey(bob, "d2", 8), /revoked/);
  const back = review(bob, listed({ d1: pin("e1", "s1"), d2: pin("e2", "s2") }), 8);
  assert.deepEqual(back, { changes: ["a revoked device came back"], blocked: true });
});

test("the seen log flags another sequence and keeps the newest entries", () => {
  const log = {};

  assert.equal(recordSeen(log, "d/m", 5, 3), undefined);
  assert.equal(recordSeen(log, "d/m", 5, 3), undefined, "the same message again");
  assert.equal(recordSeen(log, "d/m", 9, 3), 5, "a replay");
  for (const n of [10, 11, 12]) recordSeen(log, `d/x${n}`, n, 3);

  assert.deepEqual(Object.keys(log).sort(), ["d/x10", "d/x11", "d/x12"]);
});

test("contacts of the earlier format keep their pins", () => {
  const stored = { u1: { pins: { d1: { encryption: "aa", signing: "bb" } }, verified: true } } as unknown as Record<
    string,
    Contact
  >;

  const upgraded = upgradeContacts(stored, 9).u1;

  assert.deepEqual(upgraded.keys.d1, { encryption: "aa", signing: "bb", firstSeenAt: 9 });
  assert.equal(upgraded.verified, true);
  assert.equal(upgraded.pins, undefined);
});
