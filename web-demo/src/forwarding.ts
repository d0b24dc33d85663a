// History on a new device: key forwarding, as e2ee/src/forwarding.rs specifies it (the design and
// its threat model are there). Another device of the user re-wraps the content key of a message
// it can read for this device and signs it; the server hands it over with the message in
// ListMessages (`Message.forwardedKeys`). This device uses a forwarded key only from another
// device of its own user whose key it pins (not revoked when the key was stored; core.ts checks
// that), after the forwarder's signature, and then checks the message itself as `e2ee.open` does:
// the sender's signature, the key commitment the sender signed, decryption.
//
// The page forwards too (core.ts `forwardKeys`, after login and when the user's devices change):
// for each other device of the user it trusts (pinned, same keys, nothing pending), the keys of the
// messages it can read and that device was not sealed for, from where it stopped (IndexedDB): with
// its own wrapped key, or with a key another device forwarded to it (`reforwardKey`), so that a
// third device gets history from a device that got it by forwarding. A key it was forwarded is
// passed on only after every check it makes to show the message (the forwarder is a trusted
// device of the user, its signature, the sender's signature, the key commitment, decryption); the
// receiver sees an ordinary forwarded key signed by this device, and checks it as any other.

import * as e2ee from "./e2ee";
import { create } from "@bufbuild/protobuf";
import { ForwardedKeySchema, type ForwardedKey, type Message } from "./gen/chat/v1/chat_pb";

/** The label that starts what a forwarding device signs. */
export const FORWARDED_KEY_LABEL = "chat-e2ee-v2 forwarded key";

function lengthPrefixed(item: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + item.length);
  new DataView(out.buffer).setUint32(0, item.length);
  out.set(item, 4);
  return out;
}

/**
 * What the forwarding device signs: the length-prefixed label, conversation id, message id,
 * forwarder user and device, recipient device, recipient key fingerprint, wrapped key and the
 * message's key commitment.
 */
export function forwardedKeySignedMessage(
  conversationId: string,
  messageId: string,
  key: ForwardedKey,
  keyCommitment: Uint8Array,
): Uint8Array {
  return e2ee.concat(
    ...[
      e2ee.utf8(FORWARDED_KEY_LABEL),
      e2ee.utf8(conversationId),
      e2ee.utf8(messageId),
      e2ee.utf8(key.forwarderUserId),
      e2ee.utf8(key.forwarderDeviceId),
      e2ee.utf8(key.recipientDeviceId),
      key.recipientKeyFingerprint,
      key.wrappedKey,
      keyCommitment,
    ].map(lengthPrefixed),
  );
}

/** Whether `message` carries a wrapped key of `deviceId` (then no forwarded key is used). */
export function hasOwnKey(message: Message, deviceId: string): boolean {
  return (message.envelope?.wrappedKeys ?? []).some((k) => k.deviceId === deviceId && k.wrappedKey.length > 0);
}

/**
 * Opens `message`, delivered to this device without a wrapped key of its own, with `key`, which the
 * device `key.forwarderDeviceId` (whose pinned Ed25519 key is `forwarderSigningKey`) forwarded.
 * Checks, in the crate's order: the forwarder's signature; that the key names this message,
 * conversation, device and current key; the sender's signature; unwrapping, the key commitment,
 * decryption, padding.
 */
export async function openForwarded(
  message: Message,
  key: ForwardedKey,
  myDeviceId: string,
  myKeys: e2ee.DeviceKeys,
  senderSigningKey: Uint8Array,
  forwarderSigningKey: Uint8Array,
): Promise<e2ee.Opened> {
  return (await openForwardedKey(message, key, myDeviceId, myKeys, senderSigningKey, forwarderSigningKey)).opened;
}

/** `openForwarded`, also returning the content key (which `reforwardKey` wraps again). */
async function openForwardedKey(
  message: Message,
  key: ForwardedKey,
  myDeviceId: string,
  myKeys: e2ee.DeviceKeys,
  senderSigningKey: Uint8Array,
  forwarderSigningKey: Uint8Array,
): Promise<{ opened: e2ee.Opened; contentKey: Uint8Array }> {
  const envelope = message.envelope!;
  if (key.signature.length !== 64) throw new e2ee.E2eeError("Malformed", "signature");
  await e2ee.verifyEd25519Strict(
    forwarderSigningKey,
    forwardedKeySignedMessage(message.conversationId, message.messageId, key, envelope.keyCommitment),
    key.signature,
  );
  if (envelope.conversationId !== message.conversationId || key.recipientDeviceId !== myDeviceId) {
    throw new e2ee.E2eeError("Malformed", "the forwarded key names another message, conversation or device");
  }
  if (!e2ee.equalBytes(key.recipientKeyFingerprint, myKeys.encryptionFingerprint)) {
    throw new e2ee.E2eeError("KeyFingerprintMismatch");
  }
  const header = { ...envelope, recipientsDigest: message.recipientsDigest };
  await e2ee.verifySignature(header, envelope.ciphertext, envelope.signature, senderSigningKey);
  const contentKey = await e2ee.unwrapCommitted(envelope, myKeys, key.wrappedKey);
  return { opened: await e2ee.decryptWithKey(envelope, message.recipientsDigest, contentKey), contentKey };
}

/** Most keys per ForwardKeys call (the service's documented limit). */
export const KEYS_PER_CALL = 500;

/**
 * Whether this device should forward `message`'s key to `targetDeviceId`: the target was not a
 * recipient, and this device holds a wrapped key of its own or was forwarded one by another device
 * than the target (which holds the key already when it forwarded it here).
 */
export function shouldForward(message: Message, myDeviceId: string, targetDeviceId: string): boolean {
  const keys = message.envelope?.wrappedKeys ?? [];
  if (keys.some((k) => k.deviceId === targetDeviceId)) return false;
  if (hasOwnKey(message, myDeviceId)) return true;
  const forwarders = message.forwardedKeys.filter((k) => k.recipientDeviceId === myDeviceId).map((k) => k.forwarderDeviceId);
  return forwarders.length > 0 && !forwarders.includes(targetDeviceId);
}

/**
 * Re-wraps the content key of `message` (which this device, `myUserId`/`myDeviceId`, received with
 * its own wrapped key and verifies here with `senderSigningKey`) for `target`, and signs it.
 */
export async function forwardKey(
  message: Message,
  myUserId: string,
  myDeviceId: string,
  myKeys: e2ee.DeviceKeys,
  senderSigningKey: Uint8Array,
  target: e2ee.RecipientDevice,
): Promise<ForwardedKey> {
  const envelope = message.envelope!;
  const own = { ...envelope, wrappedKeys: envelope.wrappedKeys.filter((k) => k.deviceId === myDeviceId) };
  const contentKey = await e2ee.unwrapOwnKey(
    own,
    message.recipientsDigest,
    message.recipientCount,
    myDeviceId,
    myKeys,
    senderSigningKey,
  );
  return signForwarded(message, contentKey, myUserId, myDeviceId, myKeys, target);
}

/**
 * Re-wraps for `target` the content key of `message`, which this device received without a
 * wrapped key of its own but with `key`, forwarded to it by another device of the user (whose
 * pinned Ed25519 key is `forwarderSigningKey`; the caller checked that it trusts that device, as
 * for opening): after every check `openForwarded` makes, decryption included.
 */
export async function reforwardKey(
  message: Message,
  key: ForwardedKey,
  myUserId: string,
  myDeviceId: string,
  myKeys: e2ee.DeviceKeys,
  senderSigningKey: Uint8Array,
  forwarderSigningKey: Uint8Array,
  target: e2ee.RecipientDevice,
): Promise<ForwardedKey> {
  const { contentKey } = await openForwardedKey(message, key, myDeviceId, myKeys, senderSigningKey, forwarderSigningKey);
  return signForwarded(message, contentKey, myUserId, myDeviceId, myKeys, target);
}

/** `contentKey` wrapped for `target` and signed by this device, as the ForwardKeys call takes it. */
async function signForwarded(
  message: Message,
  contentKey: Uint8Array,
  myUserId: string,
  myDeviceId: string,
  myKeys: e2ee.DeviceKeys,
  target: e2ee.RecipientDevice,
): Promise<ForwardedKey> {
  const envelope = message.envelope!;
  const key = create(ForwardedKeySchema, {
    messageId: message.messageId,
    recipientDeviceId: target.deviceId,
    recipientKeyFingerprint: await e2ee.sha256(target.encryptionSpki),
    wrappedKey: await e2ee.wrapFor(target, contentKey),
    forwarderUserId: myUserId,
    forwarderDeviceId: myDeviceId,
  });
  key.signature = await e2ee.signAsDevice(
    myKeys,
    forwardedKeySignedMessage(message.conversationId, message.messageId, key, envelope.keyCommitment),
  );
  // The server takes the forwarder from the caller's token.
  key.forwarderUserId = "";
  key.forwarderDeviceId = "";
  return key;
}
