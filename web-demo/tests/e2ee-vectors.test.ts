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
  SUITE_V2,
  canonicalHeader,
  envelopeHash,
  hex,
  importDeviceKeys,
  keyCommitment,
  newConversationChains,
  observeChain,
  open,
  recipientsDigest,
  recipientsEncoding,
  recipientsTree,
  safetyNumber,
  sealWith,
  signedMessage,
  unhex,
  verifyEd25519Strict,
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
  wrapped_keys: { device_id: string; key_fingerprint: string; wrapped_key: string; leaf_index?: number; inclusion_proof?: string }[];
  key_commitment: string;
  signature: string;
  sender_counter?: number;
  previous_envelope_hash?: string;
  sender_time_ms?: number;
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
      leafIndex: k.leaf_index ?? 0,
      inclusionProof: unhex(k.inclusion_proof ?? ""),
    })),
    keyCommitment: unhex(v.key_commitment),
    signature: unhex(v.signature),
    senderCounter: BigInt(v.sender_counter ?? 0),
    previousEnvelopeHash: unhex(v.previous_envelope_hash ?? ""),
    senderTimeMs: BigInt(v.sender_time_ms ?? 0),
  };
}

/** The envelope as the server delivers it to `deviceId` (V2: with the entry's inclusion proof). */
async function deliver(envelope: EnvelopeFields, deviceId: string) {
  const v2 = envelope.suite === SUITE_V2;
  const tree = v2 ? await recipientsTree(envelope.wrappedKeys) : undefined;
  const wrappedKeys = envelope.wrappedKeys
    .map((k, i) => ({ ...k, leafIndex: tree?.inclusions[i].leafIndex ?? 0, inclusionProof: tree?.inclusions[i].proof ?? new Uint8Array() }))
    .filter((k) => k.deviceId === deviceId);
  const digest = tree?.digest ?? (await recipientsDigest(envelope.wrappedKeys));
  return { envelope: { ...envelope, wrappedKeys }, digest, count: v2 ? envelope.wrappedKeys.length : 0 };
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
  const suites = new Set<number>();
  for (const c of vectors.envelopes) {
    const envelope = envelopeFrom(c.envelope);
    const v2 = envelope.suite === SUITE_V2;
    suites.add(envelope.suite);
    const recipients = c.recipients.map((name: string) => device(name));
    const digest = v2 ? (await recipientsTree(envelope.wrappedKeys)).digest : await recipientsDigest(envelope.wrappedKeys);
    assert.equal(hex(digest), c.recipients_digest, c.name);
    if (!v2) {
      const fromDevices = await recipientsDigest(
        recipients.map((d: DeviceVector) => ({ deviceId: d.device_id, keyFingerprint: unhex(d.encryption_key_fingerprint) })),
      );
      assert.equal(hex(fromDevices), c.recipients_digest, c.name);
    }
    const contentKey = unhex(c.content_key);
    assert.equal(hex(await keyCommitment(contentKey)), c.key_commitment, c.name);
    const header = { ...envelope, recipientsDigest: digest };
    assert.equal(hex(canonicalHeader(header)), c.canonical_header, c.name);
    assert.equal(hex(await signedMessage(header, envelope.ciphertext)), c.signed_message, c.name);
    if (v2) assert.equal(hex(await envelopeHash(header, envelope.ciphertext)), c.envelope_hash, c.name);

    const sender = device(c.sender);
    for (const name of c.recipients) {
      const me = device(name);
      const keys = await keysOf(name);
      const delivered = await deliver(envelope, me.device_id);
      const opened = await open(delivered.envelope, delivered.digest, delivered.count, me.device_id, keys, unhex(sender.signing_public_key));
      assert.equal(hex(opened.plaintext), c.plaintext, `${c.name} delivered to ${name}`);
      if (v2) assert.equal(hex(opened.link!.envelopeHash), c.envelope_hash, c.name);
      if (!v2) {
        const full = await open(envelope, digest, 0, me.device_id, keys, unhex(sender.signing_public_key));
        assert.equal(hex(full.plaintext), c.plaintext, `${c.name} for ${name}`);
      }
    }

    const position = v2
      ? { counter: envelope.senderCounter, previousEnvelopeHash: envelope.previousEnvelopeHash, senderTimeMs: envelope.senderTimeMs }
      : undefined;
    const resealed = await sealWith(
      { userId: sender.user_id, deviceId: sender.device_id, keys: await keysOf(c.sender) },
      c.envelope.conversation_id,
      c.envelope.client_message_id,
      recipients.map((d: DeviceVector) => ({ deviceId: d.device_id, encryptionSpki: unhex(d.encryption_spki) })),
      position,
      unhex(c.plaintext),
      contentKey,
      unhex(c.nonce),
    );
    // V2's digest binds the randomized wrapped keys, so its ciphertext and signature differ.
    const strip = (e: EnvelopeFields) => ({
      ...e,
      nonce: hex(e.nonce),
      ciphertext: v2 ? e.ciphertext.length : hex(e.ciphertext),
      keyCommitment: hex(e.keyCommitment),
      signature: v2 ? "" : hex(e.signature),
      previousEnvelopeHash: hex(e.previousEnvelopeHash),
      wrappedKeys: e.wrappedKeys.map((k) => ({ deviceId: k.deviceId, keyFingerprint: hex(k.keyFingerprint) })),
    });
    assert.deepEqual(strip(resealed), strip(envelope), `${c.name}: own seal`);
    // The fresh wrapped keys open too.
    const first = device(c.recipients[0]);
    const delivered = await deliver(resealed, first.device_id);
    const opened = await open(delivered.envelope, delivered.digest, delivered.count, first.device_id, await keysOf(first.name), unhex(sender.signing_public_key));
    assert.equal(hex(opened.plaintext), c.plaintext);
  }
  assert.deepEqual([...suites].sort(), [1, 2]);
});

test("tampered messages fail with the crate's error, check by check", async () => {
  const kinds = new Set<string>();
  for (const c of vectors.negative) {
    const opener = device(c.opener);
    const sender = device(c.sender);
    kinds.add(c.expected_error);
    await assert.rejects(
      open(
        envelopeFrom(c.envelope),
        unhex(c.recipients_digest),
        c.recipient_count ?? 0,
        opener.device_id,
        await keysOf(c.opener),
        unhex(sender.signing_public_key),
      ),
      (error: unknown) => {
        assert.ok(error instanceof E2eeError, `${c.name}: ${String(error)}`);
        assert.equal(error.kind, c.expected_error, c.name);
        return true;
      },
    );
  }
  for (const kind of ["WrappedKeyNotSigned", "BadPadding", "UnwrapFailed", "KeyCommitmentMismatch", "Malformed"]) {
    assert.ok(kinds.has(kind), `no negative case expects ${kind}`);
  }
});

test("Ed25519 verification is as strict as the Rust crate's, case by case", async () => {
  assert.ok(vectors.signatures.length >= 8);
  for (const c of vectors.signatures) {
    let outcome = "ok";
    try {
      await verifyEd25519Strict(unhex(c.public_key), unhex(c.message), unhex(c.signature));
    } catch (error) {
      assert.ok(error instanceof E2eeError, `${c.name}: ${String(error)}`);
      outcome = error.kind;
    }
    assert.equal(outcome, c.expected, c.name);
  }
});

test("recipients' encryption keys are checked as the CLI checks them", async () => {
  const alice = device("alice-laptop");
  for (const c of vectors.bad_recipient_keys) {
    await assert.rejects(
      sealWith(
        { userId: alice.user_id, deviceId: alice.device_id, keys: await keysOf("alice-laptop") },
        "c0000000-0000-4000-8000-000000000001",
        "m",
        [
          { deviceId: device("bob-phone").device_id, encryptionSpki: unhex(device("bob-phone").encryption_spki) },
          { deviceId: device("carol-desktop").device_id, encryptionSpki: unhex(c.encryption_spki) },
        ],
        { counter: 1n, previousEnvelopeHash: new Uint8Array(32), senderTimeMs: 0n },
        new Uint8Array([1]),
        new Uint8Array(32),
        new Uint8Array(12),
      ),
      (error: unknown) => error instanceof E2eeError && error.kind === "InvalidRecipientKey",
      c.name,
    );
  }
});

test("chains flag gaps, late arrivals, forks and implausible times as the crate does", async () => {
  assert.ok(vectors.chains.length > 0);
  for (const c of vectors.chains) {
    const opener = device(c.opener);
    const chains = newConversationChains();
    for (const m of c.messages) {
      const sender = device(m.sender);
      const opened = await open(
        envelopeFrom(m.envelope),
        unhex(m.recipients_digest),
        m.recipient_count,
        opener.device_id,
        await keysOf(c.opener),
        unhex(sender.signing_public_key),
      );
      assert.equal(hex(opened.link!.envelopeHash), m.envelope_hash);
      const anomalies = observeChain(chains, m.sequence, sender.device_id, opened.link!, m.server_time_ms);
      assert.deepEqual(anomalies, m.anomalies, `${c.name} #${m.sequence}`);
    }
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
