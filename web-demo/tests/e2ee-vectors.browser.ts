// The page's e2ee code (src/e2ee.ts, as the app bundles it) against the Rust crate's vectors,
// inside real Chromium: browser.ts's `vectors` scenario bundles this for the browser, injects
// it into a page of the app's origin and calls `runE2eeVectors(vectors)`, then checks that
// every case came out as the vectors say. Node runs the same vectors in e2ee-vectors.test.ts;
// this is the check that the browser's WebCrypto and @noble code agree with them too.

import {
  E2eeError,
  SUITE_V2,
  hex,
  importDeviceKeys,
  open,
  recipientsDigest,
  recipientsTree,
  sealWith,
  unhex,
  verifyEd25519Strict,
  type DeviceKeys,
  type EnvelopeFields,
} from "../src/e2ee";

/** One case's outcome: `ok`, or the kind of the E2eeError it failed with. */
export interface VectorOutcome {
  section: "signatures" | "bad_recipient_keys" | "negative" | "envelopes";
  name: string;
  expected: string;
  actual: string;
}

interface DeviceVector {
  name: string;
  device_id: string;
  user_id: string;
  encryption_private_pkcs8: string;
  encryption_spki: string;
  signing_private_pkcs8: string;
  signing_public_key: string;
}

// The vectors' JSON, as in e2ee/testdata/README.md.
type Vectors = any;

async function outcome(run: () => Promise<unknown>): Promise<string> {
  try {
    await run();
    return "ok";
  } catch (error) {
    return error instanceof E2eeError ? error.kind : `not an E2eeError: ${String(error)}`;
  }
}

function envelopeFrom(v: any): EnvelopeFields {
  return {
    suite: v.suite,
    conversationId: v.conversation_id,
    senderUserId: v.sender_user_id,
    senderDeviceId: v.sender_device_id,
    clientMessageId: v.client_message_id,
    nonce: unhex(v.nonce),
    ciphertext: unhex(v.ciphertext),
        wrappedKeys: v.wrapped_keys.map((k: any) => ({
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

async function runE2eeVectors(vectors: Vectors): Promise<VectorOutcome[]> {
  const devices: DeviceVector[] = vectors.devices;
  const device = (name: string) => devices.find((d) => d.name === name)!;
  const keyCache = new Map<string, Promise<DeviceKeys>>();
  const keysOf = (name: string): Promise<DeviceKeys> => {
    if (!keyCache.has(name)) {
      const d = device(name);
      keyCache.set(
        name,
        importDeviceKeys(unhex(d.encryption_private_pkcs8), unhex(d.encryption_spki), unhex(d.signing_private_pkcs8), unhex(d.signing_public_key)),
      );
    }
    return keyCache.get(name)!;
  };
  const outcomes: VectorOutcome[] = [];

  // Strict Ed25519: small-order and non-canonical keys, non-canonical S, identity and
  // mixed-order R, as ed25519-dalek's verify_strict with the crate's small-order checks.
  for (const c of vectors.signatures) {
    const actual = await outcome(() => verifyEd25519Strict(unhex(c.public_key), unhex(c.message), unhex(c.signature)));
    outcomes.push({ section: "signatures", name: c.name, expected: c.expected, actual });
  }

  // Recipients' RSA keys: size, exponent and DER form, as the CLI checks them.
  const alice = device("alice-laptop");
  for (const c of vectors.bad_recipient_keys) {
    const actual = await outcome(async () =>
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
    );
    outcomes.push({ section: "bad_recipient_keys", name: c.name, expected: "InvalidRecipientKey", actual });
  }

  // Tampered and dishonest envelopes (V1 and V2), each failing the check the crate says.
  for (const c of vectors.negative) {
    const actual = await outcome(async () =>
      open(
        envelopeFrom(c.envelope),
        unhex(c.recipients_digest),
        c.recipient_count ?? 0,
        device(c.opener).device_id,
        await keysOf(c.opener),
        unhex(device(c.sender).signing_public_key),
      ),
    );
    outcomes.push({ section: "negative", name: c.name, expected: c.expected_error, actual });
  }

  // Honest envelopes open for every recipient, as the server delivers them.
  for (const c of vectors.envelopes) {
    const envelope = envelopeFrom(c.envelope);
    const v2 = envelope.suite === SUITE_V2;
    const tree = v2 ? await recipientsTree(envelope.wrappedKeys) : undefined;
    const digest = tree?.digest ?? (await recipientsDigest(envelope.wrappedKeys));
    for (const name of c.recipients) {
      const me = device(name);
      const actual = await outcome(async () => {
        const wrappedKeys = envelope.wrappedKeys
          .map((k, i) => ({ ...k, leafIndex: tree?.inclusions[i].leafIndex ?? 0, inclusionProof: tree?.inclusions[i].proof ?? new Uint8Array() }))
          .filter((k) => k.deviceId === me.device_id);
        const opened = await open(
          { ...envelope, wrappedKeys },
          digest,
          v2 ? envelope.wrappedKeys.length : 0,
          me.device_id,
          await keysOf(name),
          unhex(device(c.sender).signing_public_key),
        );
        if (hex(opened.plaintext) !== c.plaintext) throw new Error("another plaintext");
      });
      outcomes.push({ section: "envelopes", name: `${c.name} to ${name}`, expected: "ok", actual });
    }
  }
  return outcomes;
}

(globalThis as unknown as { runE2eeVectors: typeof runE2eeVectors }).runE2eeVectors = runE2eeVectors;
