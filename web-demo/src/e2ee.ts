// chat-e2ee-v1 in TypeScript: the envelope format of `chat.v1.Envelope` (suite V1), byte for byte
// as the Rust `e2ee` crate builds it (see e2ee/src/lib.rs for the format and e2ee/testdata for the
// vectors that tests/e2ee-vectors.test.ts checks this module against).
//
// WebCrypto does RSA-OAEP (SHA-256, MGF1-SHA-256, empty label), Ed25519, SHA-256/512 and
// HMAC-SHA-256; AES-256-GCM-SIV, which WebCrypto lacks, comes from @noble/ciphers. Works in the
// browser and in Node 20 (globalThis.crypto).

import { gcmsiv } from "@noble/ciphers/aes.js";

export const SUITE_V1 = 1;
const HEADER_LABEL = utf8("chat-e2ee-v1 header");
const KEY_COMMITMENT_LABEL = utf8("chat-e2ee-v1 key commitment");
const SAFETY_NUMBER_LABEL = utf8("chat-e2ee-v1 safety number");
const SAFETY_NUMBER_ITERATIONS = 5200;
const RSA_OAEP = { name: "RSA-OAEP", hash: "SHA-256" } as const;

/** Errors named like `e2ee::Error`'s variants, so that the vectors' `expected_error` compares. */
export type E2eeErrorKind =
  | "UnsupportedSuite"
  | "Malformed"
  | "InvalidKey"
  | "BadSignature"
  | "NoKeyForThisDevice"
  | "KeyFingerprintMismatch"
  | "UnwrapFailed"
  | "KeyCommitmentMismatch"
  | "DecryptFailed"
  | "EncryptFailed";

export class E2eeError extends Error {
  constructor(
    readonly kind: E2eeErrorKind,
    detail = "",
  ) {
    super(detail ? `${kind}: ${detail}` : kind);
  }
}

/** The fields of `chat.v1.Envelope` that the format uses (the generated type fits it). */
export interface EnvelopeFields {
  suite: number;
  conversationId: string;
  senderUserId: string;
  senderDeviceId: string;
  clientMessageId: string;
  nonce: Uint8Array;
  ciphertext: Uint8Array;
  wrappedKeys: { deviceId: string; keyFingerprint: Uint8Array; wrappedKey: Uint8Array }[];
  keyCommitment: Uint8Array;
  signature: Uint8Array;
}

/** A device's private keys (CryptoKeys: non-extractable when generated here) and public halves. */
export interface DeviceKeys {
  encryptionPrivate: CryptoKey;
  signingPrivate: CryptoKey;
  encryptionSpki: Uint8Array;
  signingPublic: Uint8Array;
  encryptionFingerprint: Uint8Array;
  signingFingerprint: Uint8Array;
}

/** One device to encrypt for: its id and its encryption key as auth publishes it (DER SPKI). */
export interface RecipientDevice {
  deviceId: string;
  encryptionSpki: Uint8Array;
}

// ---------------------------------------------------------------- bytes

export function utf8(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

export function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function unhex(text: string): Uint8Array {
  if (text.length % 2 !== 0 || /[^0-9a-fA-F]/.test(text)) throw new Error("not hex");
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/** Bytewise comparison (UTF-8 order for encoded strings, unlike JavaScript's UTF-16 sort). */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

function u32be(n: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n);
  return out;
}

function lengthPrefixed(item: Uint8Array): Uint8Array {
  return concat(u32be(item.length), item);
}

// WebCrypto wants ArrayBuffer-backed views; copying also detaches us from callers' buffers.
function buf(bytes: Uint8Array): ArrayBuffer {
  return bytes.slice().buffer as ArrayBuffer;
}

export async function sha256(bytes: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", buf(bytes)));
}

// ---------------------------------------------------------------- format

/** The canonical-header items (the recipients digest comes from outside the envelope). */
export interface Header {
  suite: number;
  conversationId: string;
  senderUserId: string;
  senderDeviceId: string;
  clientMessageId: string;
  recipientsDigest: Uint8Array;
  keyCommitment: Uint8Array;
  nonce: Uint8Array;
}

export function canonicalHeader(h: Header): Uint8Array {
  return concat(
    ...[
      HEADER_LABEL,
      u32be(h.suite >>> 0),
      utf8(h.conversationId),
      utf8(h.senderUserId),
      utf8(h.senderDeviceId),
      utf8(h.clientMessageId),
      h.recipientsDigest,
      h.keyCommitment,
      h.nonce,
    ].map(lengthPrefixed),
  );
}

export async function signedMessage(h: Header, ciphertext: Uint8Array): Promise<Uint8Array> {
  return concat(lengthPrefixed(canonicalHeader(h)), await sha256(ciphertext));
}

/** The bytes the recipients digest hashes: recipients sorted by UTF-8 device id, then fingerprint. */
export function recipientsEncoding(recipients: { deviceId: string; keyFingerprint: Uint8Array }[]): Uint8Array {
  const sorted = recipients
    .map((r) => ({ id: utf8(r.deviceId), fp: r.keyFingerprint }))
    .sort((a, b) => compareBytes(a.id, b.id) || compareBytes(a.fp, b.fp));
  return concat(...sorted.flatMap((r) => [lengthPrefixed(r.id), lengthPrefixed(r.fp)]));
}

export async function recipientsDigest(
  recipients: { deviceId: string; keyFingerprint: Uint8Array }[],
): Promise<Uint8Array> {
  return sha256(recipientsEncoding(recipients));
}

export async function keyCommitment(contentKey: Uint8Array): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey("raw", buf(contentKey), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", key, buf(KEY_COMMITMENT_LABEL)));
}

// ---------------------------------------------------------------- keys

/** Generates a device's keys: RSA-OAEP 3072 and Ed25519, private halves non-extractable. */
export async function generateDeviceKeys(rsaBits = 3072): Promise<DeviceKeys> {
  const rsa = (await crypto.subtle.generateKey(
    { ...RSA_OAEP, modulusLength: rsaBits, publicExponent: new Uint8Array([1, 0, 1]) },
    false,
    ["encrypt", "decrypt"],
  )) as CryptoKeyPair;
  const ed = (await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"])) as CryptoKeyPair;
  const encryptionSpki = new Uint8Array(await crypto.subtle.exportKey("spki", rsa.publicKey));
  const signingPublic = new Uint8Array(await crypto.subtle.exportKey("raw", ed.publicKey));
  return {
    encryptionPrivate: rsa.privateKey,
    signingPrivate: ed.privateKey,
    encryptionSpki,
    signingPublic,
    encryptionFingerprint: await sha256(encryptionSpki),
    signingFingerprint: await sha256(signingPublic),
  };
}

/** Imports PKCS#8 private keys and their public halves (for the test vectors). */
export async function importDeviceKeys(
  encryptionPkcs8: Uint8Array,
  encryptionSpki: Uint8Array,
  signingPkcs8: Uint8Array,
  signingPublic: Uint8Array,
): Promise<DeviceKeys> {
  return {
    encryptionPrivate: await crypto.subtle.importKey("pkcs8", buf(encryptionPkcs8), RSA_OAEP, false, ["decrypt"]),
    signingPrivate: await crypto.subtle.importKey("pkcs8", buf(ed25519Pkcs8V1(signingPkcs8)), { name: "Ed25519" }, false, [
      "sign",
    ]),
    encryptionSpki,
    signingPublic,
    encryptionFingerprint: await sha256(encryptionSpki),
    signingFingerprint: await sha256(signingPublic),
  };
}

// RFC 8410 PKCS#8 v1 prefix of an Ed25519 private key: SEQUENCE { version 0, AlgorithmIdentifier
// Ed25519, OCTET STRING { OCTET STRING (32 bytes) } }.
const ED25519_PKCS8_V1_PREFIX = unhex("302e020100300506032b657004220420");

/**
 * The PKCS#8 v1 form of an Ed25519 key given as v1 or v2 (v2, "OneAsymmetricKey", appends the
 * public key; the Rust crate writes v2, and WebCrypto implementations accept only v1).
 */
function ed25519Pkcs8V1(pkcs8: Uint8Array): Uint8Array {
  const marker = unhex("06032b657004220420");
  for (let i = 0; i + marker.length + 32 <= pkcs8.length; i++) {
    if (equalBytes(pkcs8.slice(i, i + marker.length), marker)) {
      return concat(ED25519_PKCS8_V1_PREFIX, pkcs8.slice(i + marker.length, i + marker.length + 32));
    }
  }
  throw new E2eeError("InvalidKey", "not an Ed25519 PKCS#8 key");
}

// ---------------------------------------------------------------- seal and open

export interface Sender {
  userId: string;
  deviceId: string;
  keys: DeviceKeys;
}

/** Encrypts `plaintext` for `recipients` with a fresh content key and nonce, signed by `sender`. */
export async function seal(
  sender: Sender,
  conversationId: string,
  clientMessageId: string,
  recipients: RecipientDevice[],
  plaintext: Uint8Array,
): Promise<EnvelopeFields> {
  return sealWith(
    sender,
    conversationId,
    clientMessageId,
    recipients,
    plaintext,
    crypto.getRandomValues(new Uint8Array(32)),
    crypto.getRandomValues(new Uint8Array(12)),
  );
}

/** `seal` with a given content key and nonce: for test vectors only. */
export async function sealWith(
  sender: Sender,
  conversationId: string,
  clientMessageId: string,
  recipients: RecipientDevice[],
  plaintext: Uint8Array,
  contentKey: Uint8Array,
  nonce: Uint8Array,
): Promise<EnvelopeFields> {
  if (recipients.length === 0) throw new E2eeError("Malformed", "a message needs at least one recipient device");
  if (new Set(recipients.map((r) => r.deviceId)).size !== recipients.length) {
    throw new E2eeError("Malformed", "a recipient device appears twice");
  }
  const publicKeys = await Promise.all(
    recipients.map((r) =>
      crypto.subtle.importKey("spki", buf(r.encryptionSpki), RSA_OAEP, false, ["encrypt"]).catch(() => {
        throw new E2eeError("InvalidKey", `the key of device ${r.deviceId}`);
      }),
    ),
  );
  const fingerprints = await Promise.all(recipients.map((r) => sha256(r.encryptionSpki)));
  const digest = await recipientsDigest(recipients.map((r, i) => ({ deviceId: r.deviceId, keyFingerprint: fingerprints[i] })));
  const commitment = await keyCommitment(contentKey);
  const header: Header = {
    suite: SUITE_V1,
    conversationId,
    senderUserId: sender.userId,
    senderDeviceId: sender.deviceId,
    clientMessageId,
    recipientsDigest: digest,
    keyCommitment: commitment,
    nonce,
  };
  const ciphertext = gcmsiv(contentKey, nonce, canonicalHeader(header)).encrypt(plaintext);
  const signature = new Uint8Array(
    await crypto.subtle.sign("Ed25519", sender.keys.signingPrivate, buf(await signedMessage(header, ciphertext))),
  );
  const wrappedKeys = await Promise.all(
    recipients.map(async (r, i) => ({
      deviceId: r.deviceId,
      keyFingerprint: fingerprints[i],
      wrappedKey: new Uint8Array(await crypto.subtle.encrypt(RSA_OAEP, publicKeys[i], buf(contentKey))),
    })),
  );
  return {
    suite: SUITE_V1,
    conversationId,
    senderUserId: sender.userId,
    senderDeviceId: sender.deviceId,
    clientMessageId,
    nonce,
    ciphertext,
    wrappedKeys,
    keyCommitment: commitment,
    signature,
  };
}

function headerOf(envelope: EnvelopeFields, recipientsDigest: Uint8Array): Header {
  return { ...envelope, recipientsDigest };
}

/** Checks suite, lengths and the Ed25519 signature (strict verification is WebCrypto's). */
export async function verifySignature(
  header: Header,
  ciphertext: Uint8Array,
  signature: Uint8Array,
  senderSigningKey: Uint8Array,
): Promise<void> {
  if (header.suite !== SUITE_V1) throw new E2eeError("UnsupportedSuite", String(header.suite));
  if (header.recipientsDigest.length !== 32) throw new E2eeError("Malformed", "recipients digest");
  if (header.keyCommitment.length !== 32) throw new E2eeError("Malformed", "key commitment");
  if (header.nonce.length !== 12) throw new E2eeError("Malformed", "nonce");
  if (ciphertext.length < 16) throw new E2eeError("Malformed", "ciphertext");
  if (signature.length !== 64) throw new E2eeError("Malformed", "signature");
  if (senderSigningKey.length !== 32) throw new E2eeError("InvalidKey", "signing key length");
  let key: CryptoKey;
  try {
    key = await crypto.subtle.importKey("raw", buf(senderSigningKey), { name: "Ed25519" }, false, ["verify"]);
  } catch {
    throw new E2eeError("InvalidKey", "not an Ed25519 key");
  }
  let ok = false;
  try {
    ok = await crypto.subtle.verify("Ed25519", key, buf(signature), buf(await signedMessage(header, ciphertext)));
  } catch {
    ok = false;
  }
  if (!ok) throw new E2eeError("BadSignature");
}

/**
 * Verifies and decrypts a delivered message for device `myDeviceId`, in the crate's order of
 * checks. The caller must still check that `senderSigningKey` belongs to the envelope's sender
 * device, and that the conversation is the one it was delivered in.
 */
export async function open(
  envelope: EnvelopeFields,
  recipientsDigest: Uint8Array,
  myDeviceId: string,
  myKeys: DeviceKeys,
  senderSigningKey: Uint8Array,
): Promise<Uint8Array> {
  const header = headerOf(envelope, recipientsDigest);
  await verifySignature(header, envelope.ciphertext, envelope.signature, senderSigningKey);
  const own = envelope.wrappedKeys.find((k) => k.deviceId === myDeviceId && k.wrappedKey.length > 0);
  if (!own) throw new E2eeError("NoKeyForThisDevice");
  if (!equalBytes(own.keyFingerprint, myKeys.encryptionFingerprint)) throw new E2eeError("KeyFingerprintMismatch");
  let contentKey: Uint8Array;
  try {
    contentKey = new Uint8Array(await crypto.subtle.decrypt(RSA_OAEP, myKeys.encryptionPrivate, buf(own.wrappedKey)));
  } catch {
    throw new E2eeError("UnwrapFailed");
  }
  if (contentKey.length !== 32) throw new E2eeError("UnwrapFailed");
  if (!equalBytes(await keyCommitment(contentKey), envelope.keyCommitment)) throw new E2eeError("KeyCommitmentMismatch");
  try {
    return gcmsiv(contentKey, envelope.nonce, canonicalHeader(header)).decrypt(envelope.ciphertext);
  } catch {
    throw new E2eeError("DecryptFailed");
  }
}

// ---------------------------------------------------------------- safety numbers

async function safetyHalf(userId: string, fingerprints: Uint8Array[]): Promise<string> {
  const distinct = new Map(fingerprints.map((f) => [hex(f), f]));
  const keys = concat(...[...distinct.values()].sort(compareBytes));
  let h = concat(lengthPrefixed(SAFETY_NUMBER_LABEL), lengthPrefixed(keys), lengthPrefixed(utf8(userId)));
  for (let i = 0; i < SAFETY_NUMBER_ITERATIONS; i++) {
    h = new Uint8Array(await crypto.subtle.digest("SHA-512", buf(concat(h, keys))));
  }
  let digits = "";
  for (let i = 0; i < 6; i++) {
    let value = 0n;
    for (const byte of h.slice(5 * i, 5 * i + 5)) value = (value << 8n) | BigInt(byte);
    digits += (value % 100000n).toString().padStart(5, "0");
  }
  return digits;
}

/**
 * The safety number of two users (60 digits in 12 groups of 5), from the encryption and signing
 * fingerprints of every device of each: the same whichever side computes it.
 */
export async function safetyNumber(
  userA: string,
  fingerprintsA: Uint8Array[],
  userB: string,
  fingerprintsB: Uint8Array[],
): Promise<string> {
  const a = await safetyHalf(userA, fingerprintsA);
  const b = await safetyHalf(userB, fingerprintsB);
  const digits = a <= b ? a + b : b + a;
  return digits.match(/.{5}/g)!.join(" ");
}
