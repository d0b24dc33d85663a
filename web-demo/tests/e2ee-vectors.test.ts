// The browser's e2ee implementation (src/e2ee.ts) against the Rust crate's vectors
// (e2ee/testdata/vectors.json, schema in its README). Runs in Node with node:test:
//
//   npm run test:e2ee            (bundles with esbuild, then `node --test`)
//
// client/tests/web_demo runs it under `cargo nextest` too. The vectors path may be given in
// E2EE_VECTORS; by default it is found relative to the working directory (web-demo/).

import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { test } from "node:test";

import {
  E2eeError,
  canonicalHeader,
  hex,
  importDeviceKeys,
  keyCommitment,
  open,
  recipientsDigest,
  recipientsEncoding,
  safetyNumber,
  sealWith,
  signedMessage,
  unhex,
  type DeviceKeys,
  type EnvelopeFields,
} from "../src/e2ee";

interface DeviceVector {
  name: string;
  user_id: string;
  device_id: string;
  encryption_private_pkcs8: string;
  encryption_spki: string;
  encryption_key_fingerprint: string;
  signing_private_pkcs8: string;
  signing_public_key: string;
  signing_key_fingerprint: string;
}
interface EnvelopeVector {
  suite: number;
  conversation_id: string;
  sender_user_id: string;
  sender_device_id: string;
  client_message_id: string;
  nonce: string;
  ciphertext: string;
  wrapped_keys: { device_id: string; key_fingerprint: string; wrapped_key: string }[];
  key_commitment: string;
  signature: string;
}

const vectorsPath = process.env.E2EE_VECTORS ?? resolve(process.cwd(), "../e2ee/testdata/vectors.json");
const vectors = JSON.parse(readFileSync(vectorsPath, "utf8"));
const devices: DeviceVector[] = vectors.devices;
const device = (name: string) => devices.find((d) => d.name === name)!;

const keyCache = new Map<string, Promise<DeviceKeys>>();
function keysOf(name: string): Promise<DeviceKeys> {
  if (!keyCache.has(name)) {
    const d = device(name);
    keyCache.set(
      name,
      importDeviceKeys(
        unhex(d.encryption_private_pkcs8),
        unhex(d.encryption_spki),
        unhex(d.signing_private_pkcs8),
        unhex(d.signing_public_key),
      ),
    );
  }
  return keyCache.get(name)!;
}

function envelopeFrom(v: EnvelopeVector): EnvelopeFields {
  return {
    suite: v.suite,
    conversationId: v.conversation_id,
    senderUserId: v.sender_user_id,
    senderDeviceId: v.sender_device_id,
    clientMessageId: v.client_message_id,
    nonce: unhex(v.nonce),
    ciphertext: unhex(v.ciphertext),
    wrappedKeys: v.wrapped_keys.map((k) => ({
      deviceId: k.device_id,
      keyFingerprint: unhex(k.key_fingerprint),
      wrappedKey: unhex(k.wrapped_key),
    })),
    keyCommitment: unhex(v.key_commitment),
    signature: unhex(v.signature),
  };
}

test("device fingerprints are SHA-256 of the published keys", async () => {
  for (const d of devices) {
    const keys = await keysOf(d.name);
    assert.equal(hex(keys.encryptionFingerprint), d.encryption_key_fingerprint, d.name);
    assert.equal(hex(keys.signingFingerprint), d.signing_key_fingerprint, d.name);
  }
});

test("recipients digests sort device ids by UTF-8 bytes", async () => {
  for (const c of vectors.recipients_digests) {
    const recipients = c.recipients.map((r: { device_id: string; key_fingerprint: string }) => ({
      deviceId: r.device_id,
      keyFingerprint: unhex(r.key_fingerprint),
    }));
    assert.equal(hex(recipientsEncoding(recipients)), c.encoded, c.comment);
    assert.equal(hex(await recipientsDigest(recipients)), c.digest, c.comment);
  }
});

test("envelopes rebuild byte for byte and open for every recipient", async () => {
  for (const c of vectors.envelopes) {
    const envelope = envelopeFrom(c.envelope);
    const recipients = c.recipients.map((name: string) => device(name));
    const digest = await recipientsDigest(
      recipients.map((d: DeviceVector) => ({ deviceId: d.device_id, keyFingerprint: unhex(d.encryption_key_fingerprint) })),
    );
    assert.equal(hex(digest), c.recipients_digest, c.name);
    assert.equal(hex(await recipientsDigest(envelope.wrappedKeys)), c.recipients_digest, c.name);
    const contentKey = unhex(c.content_key);
    assert.equal(hex(await keyCommitment(contentKey)), c.key_commitment, c.name);
    const header = { ...envelope, recipientsDigest: digest };
    assert.equal(hex(canonicalHeader(header)), c.canonical_header, c.name);
    assert.equal(hex(await signedMessage(header, envelope.ciphertext)), c.signed_message, c.name);

    const sender = device(c.sender);
    for (const name of c.recipients) {
      const me = device(name);
      const keys = await keysOf(name);
      const full = await open(envelope, digest, me.device_id, keys, unhex(sender.signing_public_key));
      assert.equal(hex(full), c.plaintext, `${c.name} for ${name}`);
      const delivered = { ...envelope, wrappedKeys: envelope.wrappedKeys.filter((k) => k.deviceId === me.device_id) };
      const own = await open(delivered, digest, me.device_id, keys, unhex(sender.signing_public_key));
      assert.equal(hex(own), c.plaintext, `${c.name} delivered to ${name}`);
    }

    const resealed = await sealWith(
      { userId: sender.user_id, deviceId: sender.device_id, keys: await keysOf(c.sender) },
      c.envelope.conversation_id,
      c.envelope.client_message_id,
      recipients.map((d: DeviceVector) => ({ deviceId: d.device_id, encryptionSpki: unhex(d.encryption_spki) })),
      unhex(c.plaintext),
      contentKey,
      unhex(c.nonce),
    );
    const strip = (e: EnvelopeFields) => ({
      ...e,
      nonce: hex(e.nonce),
      ciphertext: hex(e.ciphertext),
      keyCommitment: hex(e.keyCommitment),
      signature: hex(e.signature),
      wrappedKeys: e.wrappedKeys.map((k) => ({ deviceId: k.deviceId, keyFingerprint: hex(k.keyFingerprint) })),
    });
    assert.deepEqual(strip(resealed), strip(envelope), `${c.name}: own seal`);
    // The fresh wrapped keys open too.
    const first = device(c.recipients[0]);
    const opened = await open(resealed, digest, first.device_id, await keysOf(first.name), unhex(sender.signing_public_key));
    assert.equal(hex(opened), c.plaintext);
  }
});

test("tampered messages fail with the crate's error, check by check", async () => {
  for (const c of vectors.negative) {
    const opener = device(c.opener);
    const sender = device(c.sender);
    await assert.rejects(
      open(envelopeFrom(c.envelope), unhex(c.recipients_digest), opener.device_id, await keysOf(c.opener), unhex(sender.signing_public_key)),
      (error: unknown) => {
        assert.ok(error instanceof E2eeError, `${c.name}: ${String(error)}`);
        assert.equal(error.kind, c.expected_error, c.name);
        return true;
      },
    );
  }
});

test("safety numbers match and do not depend on the order of the users", async () => {
  for (const c of vectors.safety_numbers) {
    const a = c.fingerprints_a.map(unhex);
    const b = c.fingerprints_b.map(unhex);
    assert.equal(await safetyNumber(c.user_a, a, c.user_b, b), c.safety_number, c.comment);
    assert.equal(await safetyNumber(c.user_b, b, c.user_a, a), c.safety_number, c.comment);
  }
});
