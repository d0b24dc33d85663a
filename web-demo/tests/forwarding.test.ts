// Key forwarding (src/forwarding.ts) in Node with node:test: which messages a device forwards, and a
// key forwarded twice (A, a recipient, forwards to B; B, which was forwarded it, to C), with the
// checks B makes before passing it on. client/tests/web_demo runs it.

import { strict as assert } from "node:assert";
import { test } from "node:test";

import { create } from "@bufbuild/protobuf";

import * as e2ee from "../src/e2ee";
import { forwardKey, forwardedKeySignedMessage, openForwarded, reforwardKey, shouldForward } from "../src/forwarding";
import { MessageSchema, type ForwardedKey, type Message } from "../src/gen/chat/v1/chat_pb";

const CONVERSATION = "0190f7a1-0000-7000-8000-000000000001";
const MESSAGE = "0190f7a1-0000-7000-8000-0000000000aa";
const [BOB, ALICE] = ["0190f7a1-0000-7000-8000-0000000000b0", "0190f7a1-0000-7000-8000-0000000000a0"];
const [BOB_PHONE, ALICE_A, ALICE_B, ALICE_C] = [
  "0190f7a1-0000-7000-8000-0000000000b1",
  "0190f7a1-0000-7000-8000-0000000000a1",
  "0190f7a1-0000-7000-8000-0000000000a2",
  "0190f7a1-0000-7000-8000-0000000000a3",
];

/** A listed message: `wrapped` device ids with a key (the first one's set), `forwarders` of keys to `to`. */
function listedMessage(wrapped: string[], to: string, forwarders: string[]): Message {
  return create(MessageSchema, {
    messageId: MESSAGE,
    conversationId: CONVERSATION,
    envelope: {
      wrappedKeys: wrapped.map((deviceId, i) => ({ deviceId, wrappedKey: i === 0 && deviceId === to ? new Uint8Array([1]) : new Uint8Array() })),
    },
    forwardedKeys: forwarders.map((forwarderDeviceId) => ({ forwarderDeviceId, recipientDeviceId: to })),
  });
}

test("a device forwards what it holds a key of, own or forwarded, to a device that does not", () => {
  assert.equal(shouldForward(listedMessage([ALICE_A, BOB_PHONE], ALICE_A, []), ALICE_A, ALICE_B), true, "its own key");
  assert.equal(shouldForward(listedMessage([ALICE_A, ALICE_B], ALICE_A, []), ALICE_A, ALICE_B), false, "a recipient");
  assert.equal(shouldForward(listedMessage([ALICE_A], ALICE_B, [ALICE_A]), ALICE_B, ALICE_C), true, "a forwarded key");
  assert.equal(shouldForward(listedMessage([ALICE_A], ALICE_B, [ALICE_A]), ALICE_B, ALICE_A), false, "back to its forwarder");
  assert.equal(shouldForward(listedMessage([ALICE_A], ALICE_B, []), ALICE_B, ALICE_C), false, "no key at all");
});

interface Device {
  userId: string;
  deviceId: string;
  keys: e2ee.DeviceKeys;
}

async function device(userId: string, deviceId: string): Promise<Device> {
  return { userId, deviceId, keys: await e2ee.generateDeviceKeys(2048) };
}

const recipient = (d: Device): e2ee.RecipientDevice => ({ deviceId: d.deviceId, encryptionSpki: d.keys.encryptionSpki });

/** Bob's message for his phone and alice's device A, as the server lists it to `to`. */
async function sealed(bob: Device, a: Device): Promise<{ envelope: e2ee.EnvelopeFields; listedTo: (to: string, forwarded: ForwardedKey[]) => Message }> {
  const position = { counter: 1n, previousEnvelopeHash: new Uint8Array(32), senderTimeMs: BigInt(Date.now()) };
  const envelope = await e2ee.seal(bob, CONVERSATION, crypto.randomUUID(), [recipient(bob), recipient(a)], position, e2ee.utf8("history"));
  const tree = await e2ee.recipientsTree(envelope.wrappedKeys);
  const listedTo = (to: string, forwarded: ForwardedKey[]) =>
    create(MessageSchema, {
      messageId: MESSAGE,
      conversationId: CONVERSATION,
      sequence: 1n,
      envelope: {
        ...envelope,
        wrappedKeys: envelope.wrappedKeys
          .map((k, i) => ({ ...k, leafIndex: tree.inclusions[i].leafIndex, inclusionProof: tree.inclusions[i].proof }))
          .filter((k) => k.deviceId === to),
      },
      recipientsDigest: tree.digest,
      recipientCount: envelope.wrappedKeys.length,
      forwardedKeys: forwarded,
    });
  return { envelope, listedTo };
}

/** A forwarded key as the server hands it over: the forwarder named from its token. */
function delivered(key: ForwardedKey, forwarder: Device): ForwardedKey {
  return { ...key, forwarderUserId: forwarder.userId, forwarderDeviceId: forwarder.deviceId };
}

test("a key forwarded to a device is forwarded on, and the third device opens the message", async () => {
  const [bob, a, b, c] = await Promise.all([device(BOB, BOB_PHONE), device(ALICE, ALICE_A), device(ALICE, ALICE_B), device(ALICE, ALICE_C)]);
  const { listedTo } = await sealed(bob, a);
  const toB = delivered(await forwardKey(listedTo(a.deviceId, []), ALICE, a.deviceId, a.keys, bob.keys.signingPublic, recipient(b)), a);

  const toC = delivered(
    await reforwardKey(listedTo(b.deviceId, [toB]), toB, ALICE, b.deviceId, b.keys, bob.keys.signingPublic, a.keys.signingPublic, recipient(c)),
    b,
  );
  const opened = await openForwarded(listedTo(c.deviceId, [toC]), toC, c.deviceId, c.keys, bob.keys.signingPublic, b.keys.signingPublic);

  assert.equal(new TextDecoder().decode(opened.plaintext), "history");
  await assert.rejects(
    openForwarded(listedTo(c.deviceId, [toC]), toC, c.deviceId, c.keys, bob.keys.signingPublic, a.keys.signingPublic),
    "the last hop is checked with its own forwarder's key",
  );
});

test("a forwarded key is not forwarded on unless every check of opening passes", async () => {
  const [bob, a, b, c] = await Promise.all([device(BOB, BOB_PHONE), device(ALICE, ALICE_A), device(ALICE, ALICE_B), device(ALICE, ALICE_C)]);
  const { envelope, listedTo } = await sealed(bob, a);
  const toB = delivered(await forwardKey(listedTo(a.deviceId, []), ALICE, a.deviceId, a.keys, bob.keys.signingPublic, recipient(b)), a);
  const reforward = (key: ForwardedKey, forwarderKey: Uint8Array, senderKey = bob.keys.signingPublic) =>
    reforwardKey(listedTo(b.deviceId, [key]), key, ALICE, b.deviceId, b.keys, senderKey, forwarderKey, recipient(c));
  const flipped = (bytes: Uint8Array) => bytes.map((byte, i) => (i === 0 ? byte ^ 1 : byte));

  await assert.rejects(reforward(toB, c.keys.signingPublic), "a forwarder other than the one that signed");
  await assert.rejects(reforward({ ...toB, signature: flipped(toB.signature) }, a.keys.signingPublic), "a bad forwarder signature");
  await assert.rejects(reforward(toB, a.keys.signingPublic, a.keys.signingPublic), "a sender key that did not sign the message");
  await assert.rejects(reforward({ ...toB, recipientDeviceId: c.deviceId }, a.keys.signingPublic), "a key for another device");
  // A lying forwarder signs a key that is not the message's: the key commitment refuses it.
  const lie = { ...toB, wrappedKey: await e2ee.wrapFor(recipient(b), crypto.getRandomValues(new Uint8Array(32))) };
  lie.signature = await e2ee.signAsDevice(a.keys, forwardedKeySignedMessage(CONVERSATION, MESSAGE, lie, envelope.keyCommitment));
  await assert.rejects(reforward(lie, a.keys.signingPublic), (error: unknown) => error instanceof e2ee.E2eeError && error.kind === "KeyCommitmentMismatch");
});
