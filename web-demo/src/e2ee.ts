// chat-e2ee in TypeScript: the envelope format of `chat.v1.Envelope` (suites V1 and V2), byte for
// byte as the Rust `e2ee` crate builds it (see e2ee/src/lib.rs for the format and e2ee/testdata for
// the vectors that tests/e2ee-vectors.test.ts checks this module against). Seals V2, opens both.
//
// WebCrypto does RSA-OAEP (SHA-256, MGF1-SHA-256, empty label), Ed25519 signing, SHA-256/512 and
// HMAC-SHA-256; AES-256-GCM-SIV, which WebCrypto lacks, comes from @noble/ciphers; Ed25519
// verification is done here on @noble/curves' point arithmetic, exactly as the Rust side's
// `verify_strict` does it (WebCrypto implementations differ: Node 20's accepted the identity point
// as a key and R = identity, S = 0 for any message). Works in the browser and in Node 20.

import { gcmsiv } from "@noble/ciphers/aes.js";
import { ed25519 } from "@noble/curves/ed25519.js";

export const SUITE_V1 = 1;
export const SUITE_V2 = 2;
const HEADER_LABEL = utf8("chat-e2ee-v1 header");
const HEADER_LABEL_V2 = utf8("chat-e2ee-v2 header");
const RECIPIENTS_LABEL_V2 = utf8("chat-e2ee-v2 recipients");
const ENVELOPE_HASH_LABEL = utf8("chat-e2ee-v2 envelope hash");
/** The smallest V2 ciphertext; every V2 ciphertext is a power of two. */
export const MIN_PADDED_CIPHERTEXT = 256;
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
  | "WrappedKeyNotSigned"
  | "UnwrapFailed"
  | "KeyCommitmentMismatch"
  | "DecryptFailed"
  | "BadPadding"
  | "InvalidRecipientKey"
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
  wrappedKeys: WrappedKeyFields[];
  keyCommitment: Uint8Array;
  signature: Uint8Array;
  /** V2: the sending device's counter in the conversation (bigint, as the generated type). */
  senderCounter: bigint;
  /** V2: the envelope hash of that device's previous envelope (zeros for its first). */
  previousEnvelopeHash: Uint8Array;
  /** V2: the sender's clock when sealing, Unix milliseconds. */
  senderTimeMs: bigint;
}

/** `chat.v1.WrappedKey`. */
export interface WrappedKeyFields {
  deviceId: string;
  keyFingerprint: Uint8Array;
  wrappedKey: Uint8Array;
  /** V2, delivered: the entry's place in the recipients tree. */
  leafIndex: number;
  /** V2, delivered: the sibling hashes to the root. */
  inclusionProof: Uint8Array;
}

/** A sending device's position in its chain of one conversation (the next envelope's). */
export interface ChainPosition {
  counter: bigint;
  previousEnvelopeHash: Uint8Array;
  senderTimeMs: bigint;
}

/** A verified V2 envelope as a link of its sender's chain. */
export interface ChainLink {
  counter: bigint;
  previousEnvelopeHash: Uint8Array;
  envelopeHash: Uint8Array;
  senderTimeMs: bigint;
}

/** What `open` returns. */
export interface Opened {
  plaintext: Uint8Array;
  /** V2 only. */
  link: ChainLink | undefined;
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

function u64be(n: bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt.asUintN(64, n));
  return out;
}

/** Lowercase, hyphenated 8-4-4-4-12 hex: the only UUID text the format accepts. */
export function isCanonicalUuid(text: string): boolean {
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(text);
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
  /** V2 only. */
  senderCounter: bigint;
  previousEnvelopeHash: Uint8Array;
  senderTimeMs: bigint;
}

export function canonicalHeader(h: Header): Uint8Array {
  const v2 = h.suite === SUITE_V2;
  const items = [
    v2 ? HEADER_LABEL_V2 : HEADER_LABEL,
    u32be(h.suite >>> 0),
    utf8(h.conversationId),
    utf8(h.senderUserId),
    utf8(h.senderDeviceId),
    utf8(h.clientMessageId),
    h.recipientsDigest,
    h.keyCommitment,
    h.nonce,
  ];
  if (v2) items.push(u64be(h.senderCounter), h.previousEnvelopeHash, u64be(h.senderTimeMs));
  return concat(...items.map(lengthPrefixed));
}

/** The V2 envelope hash, which the sender's next envelope names as its previous one. */
export async function envelopeHash(h: Header, ciphertext: Uint8Array): Promise<Uint8Array> {
  return sha256(concat(lengthPrefixed(ENVELOPE_HASH_LABEL), lengthPrefixed(await signedMessage(h, ciphertext))));
}

// ---------------------------------------------------------------- V2 recipients tree

function nodeHash(left: Uint8Array, right: Uint8Array): Promise<Uint8Array> {
  return sha256(concat(new Uint8Array([1]), left, right));
}

/** The leaf of one entry: SHA-256(0x00 || lp(device id) || lp(fingerprint) || lp(SHA-256(wrapped key))). */
export async function recipientLeaf(deviceId: string, keyFingerprint: Uint8Array, wrappedKey: Uint8Array): Promise<Uint8Array> {
  return sha256(
    concat(
      new Uint8Array([0]),
      lengthPrefixed(utf8(deviceId)),
      lengthPrefixed(keyFingerprint),
      lengthPrefixed(await sha256(wrappedKey)),
    ),
  );
}

async function treeDigest(count: number, root: Uint8Array): Promise<Uint8Array> {
  return sha256(concat(lengthPrefixed(RECIPIENTS_LABEL_V2), lengthPrefixed(u32be(count)), lengthPrefixed(root)));
}

/** The V2 recipients digest of a full entry list, and each entry's inclusion proof (input order). */
export async function recipientsTree(
  entries: { deviceId: string; keyFingerprint: Uint8Array; wrappedKey: Uint8Array }[],
): Promise<{ digest: Uint8Array; inclusions: { leafIndex: number; proof: Uint8Array }[] }> {
  const leaves = await Promise.all(
    entries.map(async (e, position) => ({
      id: utf8(e.deviceId),
      leaf: await recipientLeaf(e.deviceId, e.keyFingerprint, e.wrappedKey),
      position,
    })),
  );
  leaves.sort((a, b) => compareBytes(a.id, b.id) || compareBytes(a.leaf, b.leaf) || a.position - b.position);
  const proofs: Uint8Array[][] = entries.map(() => []);
  const inclusions: { leafIndex: number; proof: Uint8Array }[] = entries.map(() => ({
    leafIndex: 0,
    proof: new Uint8Array(),
  }));
  leaves.forEach((l, index) => (inclusions[l.position].leafIndex = index));
  let level = leaves.map((l) => l.leaf);
  const indexes = leaves.map((_, index) => index);
  while (level.length > 1) {
    leaves.forEach((l, sorted) => {
      const sibling = indexes[sorted] ^ 1;
      if (sibling < level.length) proofs[l.position].push(level[sibling]);
      indexes[sorted] >>= 1;
    });
    const next: Uint8Array[] = [];
    for (let i = 0; i < level.length; i += 2) next.push(i + 1 < level.length ? await nodeHash(level[i], level[i + 1]) : level[i]);
    level = next;
  }
  const root = level[0] ?? (await sha256(new Uint8Array()));
  proofs.forEach((p, position) => (inclusions[position].proof = concat(...p)));
  return { digest: await treeDigest(entries.length, root), inclusions };
}

/** RFC 9162 section 2.1.3.2: whether `leaf` at `leafIndex` of `count` leads to the root in `digest`. */
export async function verifyInclusion(
  leaf: Uint8Array,
  leafIndex: number,
  proof: Uint8Array,
  count: number,
  digest: Uint8Array,
): Promise<boolean> {
  if (leafIndex >= count || proof.length % 32 !== 0) return false;
  let index = leafIndex;
  let last = count - 1;
  let hash = leaf;
  for (let at = 0; at < proof.length; at += 32) {
    const sibling = proof.slice(at, at + 32);
    if (last === 0) return false;
    if ((index & 1) === 1 || index === last) {
      hash = await nodeHash(sibling, hash);
      while ((index & 1) === 0 && index !== 0) {
        index >>>= 1;
        last >>>= 1;
      }
    } else {
      hash = await nodeHash(hash, sibling);
    }
    index >>>= 1;
    last >>>= 1;
  }
  return last === 0 && equalBytes(await treeDigest(count, hash), digest);
}

// ---------------------------------------------------------------- V2 padding

export function paddedCiphertextLength(plaintextLength: number): number {
  let bucket = MIN_PADDED_CIPHERTEXT;
  while (bucket < 4 + plaintextLength + 16) bucket *= 2;
  return bucket;
}

export function pad(plaintext: Uint8Array): Uint8Array {
  const out = new Uint8Array(paddedCiphertextLength(plaintext.length) - 16);
  out.set(u32be(plaintext.length), 0);
  out.set(plaintext, 4);
  return out;
}

export function unpad(padded: Uint8Array): Uint8Array {
  if (padded.length < 4) throw new E2eeError("BadPadding");
  const length = new DataView(padded.buffer, padded.byteOffset, 4).getUint32(0);
  if (length > padded.length - 4 || padded.length + 16 !== paddedCiphertextLength(length)) throw new E2eeError("BadPadding");
  if (padded.slice(4 + length).some((b) => b !== 0)) throw new E2eeError("BadPadding");
  return padded.slice(4, 4 + length);
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

// ---------------------------------------------------------------- strict checks of keys

const RSA_ENCRYPTION_ALGORITHM = unhex("300d06092a864886f70d0101010500");

/** A DER length: short form below 128, else the minimal long form. */
function derLength(n: number): Uint8Array {
  if (n < 0x80) return new Uint8Array([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v % 256);
  return new Uint8Array([0x80 | bytes.length, ...bytes]);
}

function derTlv(tag: number, content: Uint8Array): Uint8Array {
  return concat(new Uint8Array([tag]), derLength(content.length), content);
}

/** A non-negative DER INTEGER from big-endian magnitude bytes (minimal, sign byte if needed). */
function derUnsigned(magnitude: Uint8Array): Uint8Array {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  const minimal = magnitude.slice(start);
  return derTlv(0x02, minimal[0] & 0x80 ? concat(new Uint8Array([0]), minimal) : minimal);
}

/** Reads one TLV at `at`; returns its tag, content and the offset after it (lenient: checked by re-encoding). */
function readTlv(bytes: Uint8Array, at: number): { tag: number; content: Uint8Array; end: number } {
  if (at + 2 > bytes.length) throw new Error("truncated");
  const tag = bytes[at];
  let length = bytes[at + 1];
  let offset = at + 2;
  if (length & 0x80) {
    const n = length & 0x7f;
    if (n === 0 || n > 3 || offset + n > bytes.length) throw new Error("bad length");
    length = 0;
    for (let i = 0; i < n; i++) length = length * 256 + bytes[offset + i];
    offset += n;
  }
  if (offset + length > bytes.length) throw new Error("truncated");
  return { tag, content: bytes.slice(offset, offset + length), end: offset + length };
}

/**
 * Checks a recipient's encryption key as the Rust side does (`primitives::parse_rsa_public_key`,
 * what auth accepts): a DER SubjectPublicKeyInfo of an RSA key with a modulus of 2048 to 4096
 * bits and exponent 65537, in canonical DER (re-encoding it gives the same bytes, so that its
 * fingerprint is the one auth computed). Throws `InvalidKey` otherwise.
 */
export function checkRsaPublicKey(spki: Uint8Array): void {
  const invalid = (what: string) => new E2eeError("InvalidKey", what);
  if (spki.length > 1024) throw invalid("the encryption key is too large");
  let modulus: Uint8Array;
  let exponent: Uint8Array;
  try {
    const outer = readTlv(spki, 0);
    const algorithm = readTlv(outer.content, 0);
    const bitString = readTlv(outer.content, algorithm.end);
    if (outer.tag !== 0x30 || algorithm.tag !== 0x30 || bitString.tag !== 0x03 || bitString.content[0] !== 0) {
      throw new Error("not an SPKI");
    }
    const key = readTlv(bitString.content, 1);
    const n = readTlv(key.content, 0);
    const e = readTlv(key.content, n.end);
    if (key.tag !== 0x30 || n.tag !== 0x02 || e.tag !== 0x02) throw new Error("not an RSA key");
    modulus = n.content;
    exponent = e.content;
  } catch {
    throw invalid("not an RSA SubjectPublicKeyInfo in DER");
  }
  const magnitude = (bytes: Uint8Array) => {
    let start = 0;
    while (start < bytes.length && bytes[start] === 0) start++;
    return bytes.slice(start);
  };
  const n = magnitude(modulus);
  const bits = n.length === 0 ? 0 : (n.length - 1) * 8 + (32 - Math.clz32(n[0]));
  if (bits < 2048 || bits > 4096) throw invalid("RSA keys must have 2048 to 4096 bits");
  if (hex(magnitude(exponent)) !== "010001") throw invalid("the RSA public exponent must be 65537");
  const canonical = derTlv(
    0x30,
    concat(
      RSA_ENCRYPTION_ALGORITHM,
      derTlv(0x03, concat(new Uint8Array([0]), derTlv(0x30, concat(derUnsigned(modulus), derUnsigned(exponent))))),
    ),
  );
  if (!equalBytes(canonical, spki)) throw invalid("the RSA key is not in canonical DER");
}

function bytesToBigIntLE(bytes: Uint8Array): bigint {
  let value = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[i]);
  return value;
}

/**
 * Ed25519 verification exactly as the Rust side does it (`primitives::ed25519_verify`:
 * ed25519-dalek's `verify_strict` on a key refused when it is not canonically encoded or of small
 * order): the key must decode strictly (y < p, no negative zero) to a point not of small order
 * (`InvalidKey`); R must decode strictly to a point not of small order, S must be below the group
 * order, and [S]B - [k]A must encode to exactly R's bytes, k = SHA-512(R || A || M) mod L: the
 * cofactorless equation, so a signature that only the cofactored one accepts (a mixed-order R)
 * fails (`BadSignature`).
 */
export async function verifyEd25519Strict(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): Promise<void> {
  if (signature.length !== 64) throw new E2eeError("Malformed", "the signature must be 64 bytes");
  if (publicKey.length !== 32) throw new E2eeError("InvalidKey", "an Ed25519 public key must be 32 bytes");
  const Point = ed25519.Point;
  let a;
  try {
    a = Point.fromBytes(publicKey, false);
  } catch {
    throw new E2eeError("InvalidKey", "the Ed25519 public key is not a valid point");
  }
  if (a.isSmallOrder()) throw new E2eeError("InvalidKey", "the Ed25519 public key is of small order");
  if (!equalBytes(a.toBytes(), publicKey)) throw new E2eeError("InvalidKey", "the Ed25519 public key is not canonical");
  const rBytes = signature.slice(0, 32);
  const s = bytesToBigIntLE(signature.slice(32));
  const order = Point.Fn.ORDER;
  if (s >= order) throw new E2eeError("BadSignature");
  let r;
  try {
    r = Point.fromBytes(rBytes, false);
  } catch {
    throw new E2eeError("BadSignature");
  }
  if (r.isSmallOrder()) throw new E2eeError("BadSignature");
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-512", buf(concat(rBytes, publicKey, message))));
  const k = bytesToBigIntLE(digest) % order;
  const sB = s === 0n ? Point.ZERO : Point.BASE.multiplyUnsafe(s);
  const kA = k === 0n ? Point.ZERO : a.multiplyUnsafe(k);
  if (!equalBytes(sB.subtract(kA).toBytes(), rBytes)) throw new E2eeError("BadSignature");
}

// ---------------------------------------------------------------- seal and open

export interface Sender {
  userId: string;
  deviceId: string;
  keys: DeviceKeys;
}

/**
 * Encrypts `plaintext` for `recipients` as suite V2 at chain position `position`, with a fresh
 * content key and nonce, signed by `sender`. The next envelope of this device in the conversation
 * takes `counter + 1` and `sealedLink(envelope).envelopeHash`.
 */
export async function seal(
  sender: Sender,
  conversationId: string,
  clientMessageId: string,
  recipients: RecipientDevice[],
  position: ChainPosition,
  plaintext: Uint8Array,
): Promise<EnvelopeFields> {
  return sealWith(
    sender,
    conversationId,
    clientMessageId,
    recipients,
    position,
    plaintext,
    crypto.getRandomValues(new Uint8Array(32)),
    crypto.getRandomValues(new Uint8Array(12)),
  );
}

/** The chain link of an envelope just sealed (its hash is the next one's previous hash). */
export async function sealedLink(envelope: EnvelopeFields): Promise<ChainLink> {
  return chainLink(envelope, await recipientsDigestOf(envelope));
}

async function recipientsDigestOf(envelope: EnvelopeFields): Promise<Uint8Array> {
  return envelope.suite === SUITE_V2
    ? (await recipientsTree(envelope.wrappedKeys)).digest
    : recipientsDigest(envelope.wrappedKeys);
}

async function chainLink(envelope: EnvelopeFields, recipientsDigest: Uint8Array): Promise<ChainLink> {
  return {
    counter: envelope.senderCounter,
    previousEnvelopeHash: envelope.previousEnvelopeHash,
    envelopeHash: await envelopeHash(headerOf(envelope, recipientsDigest), envelope.ciphertext),
    senderTimeMs: envelope.senderTimeMs,
  };
}

/** `seal` with a given content key and nonce: for test vectors only (no position: suite V1). */
export async function sealWith(
  sender: Sender,
  conversationId: string,
  clientMessageId: string,
  recipients: RecipientDevice[],
  position: ChainPosition | undefined,
  plaintext: Uint8Array,
  contentKey: Uint8Array,
  nonce: Uint8Array,
): Promise<EnvelopeFields> {
  if (recipients.length === 0) throw new E2eeError("Malformed", "a message needs at least one recipient device");
  if (new Set(recipients.map((r) => r.deviceId)).size !== recipients.length) {
    throw new E2eeError("Malformed", "a recipient device appears twice");
  }
  for (const id of [conversationId, sender.userId, sender.deviceId, ...recipients.map((r) => r.deviceId)]) {
    if (!isCanonicalUuid(id)) throw new E2eeError("Malformed", "ids must be canonical UUIDs");
  }
  const publicKeys = await Promise.all(
    recipients.map((r) => {
      try {
        checkRsaPublicKey(r.encryptionSpki);
      } catch {
        throw new E2eeError("InvalidRecipientKey", r.deviceId);
      }
      return crypto.subtle.importKey("spki", buf(r.encryptionSpki), RSA_OAEP, false, ["encrypt"]).catch(() => {
        throw new E2eeError("InvalidRecipientKey", r.deviceId);
      });
    }),
  );
  const wrappedKeys: WrappedKeyFields[] = await Promise.all(
    recipients.map(async (r, i) => ({
      deviceId: r.deviceId,
      keyFingerprint: await sha256(r.encryptionSpki),
      wrappedKey: new Uint8Array(await crypto.subtle.encrypt(RSA_OAEP, publicKeys[i], buf(contentKey))),
      leafIndex: 0,
      inclusionProof: new Uint8Array(),
    })),
  );
  const envelope: EnvelopeFields = {
    suite: position ? SUITE_V2 : SUITE_V1,
    conversationId,
    senderUserId: sender.userId,
    senderDeviceId: sender.deviceId,
    clientMessageId,
    nonce,
    ciphertext: new Uint8Array(),
    wrappedKeys,
    keyCommitment: await keyCommitment(contentKey),
    signature: new Uint8Array(),
    senderCounter: position?.counter ?? 0n,
    previousEnvelopeHash: position?.previousEnvelopeHash ?? new Uint8Array(),
    senderTimeMs: position?.senderTimeMs ?? 0n,
  };
  const header = headerOf(envelope, await recipientsDigestOf(envelope));
  envelope.ciphertext = gcmsiv(contentKey, nonce, canonicalHeader(header)).encrypt(position ? pad(plaintext) : plaintext);
  envelope.signature = new Uint8Array(
    await crypto.subtle.sign("Ed25519", sender.keys.signingPrivate, buf(await signedMessage(header, envelope.ciphertext))),
  );
  return envelope;
}

function headerOf(envelope: EnvelopeFields, recipientsDigest: Uint8Array): Header {
  return { ...envelope, recipientsDigest };
}

/** Checks suite, ids, lengths and the Ed25519 signature (strictly, see `verifyEd25519Strict`). */
export async function verifySignature(
  header: Header,
  ciphertext: Uint8Array,
  signature: Uint8Array,
  senderSigningKey: Uint8Array,
): Promise<void> {
  const v2 = header.suite === SUITE_V2;
  if (header.suite !== SUITE_V1 && !v2) throw new E2eeError("UnsupportedSuite", String(header.suite));
  for (const id of [header.conversationId, header.senderUserId, header.senderDeviceId]) {
    if (!isCanonicalUuid(id)) throw new E2eeError("Malformed", "ids must be canonical UUIDs");
  }
  if (header.recipientsDigest.length !== 32) throw new E2eeError("Malformed", "recipients digest");
  if (header.keyCommitment.length !== 32) throw new E2eeError("Malformed", "key commitment");
  if (header.nonce.length !== 12) throw new E2eeError("Malformed", "nonce");
  if (v2 && header.previousEnvelopeHash.length !== 32) throw new E2eeError("Malformed", "previous envelope hash");
  if (v2 && header.senderCounter === 0n) throw new E2eeError("Malformed", "sender counter");
  if (ciphertext.length < 16) throw new E2eeError("Malformed", "ciphertext");
  if (v2 && (ciphertext.length < MIN_PADDED_CIPHERTEXT || (ciphertext.length & (ciphertext.length - 1)) !== 0)) {
    throw new E2eeError("Malformed", "a V2 ciphertext is a power of two of at least 256 bytes");
  }
  await verifyEd25519Strict(senderSigningKey, await signedMessage(header, ciphertext), signature);
}

/**
 * Verifies and decrypts a delivered message for device `myDeviceId`, in the crate's order of
 * checks: for V2 no RSA work is done on a wrapped key the sender did not sign (its inclusion
 * proof). The caller must still check that `senderSigningKey` belongs to the envelope's sender
 * device, that the conversation is the one it was delivered in, and feed the V2 link to its chains.
 */
export async function open(
  envelope: EnvelopeFields,
  recipientsDigest: Uint8Array,
  recipientCount: number,
  myDeviceId: string,
  myKeys: DeviceKeys,
  senderSigningKey: Uint8Array,
): Promise<Opened> {
  const contentKey = await unwrapOwnKey(envelope, recipientsDigest, recipientCount, myDeviceId, myKeys, senderSigningKey);
  return decryptWithKey(envelope, recipientsDigest, contentKey);
}

/**
 * The first half of `open`: the signature, this device's own entry (its fingerprint and, for V2,
 * its inclusion proof), RSA-OAEP unwrapping and the key commitment; returns the content key. What a
 * device forwards to another device of its user (forwarding.ts) is a key that passed all of these.
 */
export async function unwrapOwnKey(
  envelope: EnvelopeFields,
  recipientsDigest: Uint8Array,
  recipientCount: number,
  myDeviceId: string,
  myKeys: DeviceKeys,
  senderSigningKey: Uint8Array,
): Promise<Uint8Array> {
  const header = headerOf(envelope, recipientsDigest);
  await verifySignature(header, envelope.ciphertext, envelope.signature, senderSigningKey);
  const own = envelope.wrappedKeys.find((k) => k.deviceId === myDeviceId && k.wrappedKey.length > 0);
  if (!own) throw new E2eeError("NoKeyForThisDevice");
  if (!equalBytes(own.keyFingerprint, myKeys.encryptionFingerprint)) throw new E2eeError("KeyFingerprintMismatch");
  if (envelope.suite === SUITE_V2) {
    const leaf = await recipientLeaf(own.deviceId, own.keyFingerprint, own.wrappedKey);
    if (!(await verifyInclusion(leaf, own.leafIndex, own.inclusionProof, recipientCount, recipientsDigest))) {
      throw new E2eeError("WrappedKeyNotSigned");
    }
  }
  return unwrapCommitted(envelope, myKeys, own.wrappedKey);
}

/**
 * RSA-OAEP unwrapping with this device's key, then the envelope's key commitment: what a key
 * forwarded by another device of the user goes through once its signature verified (forwarding.ts).
 */
export async function unwrapCommitted(envelope: EnvelopeFields, myKeys: DeviceKeys, wrappedKey: Uint8Array): Promise<Uint8Array> {
  let contentKey: Uint8Array;
  try {
    contentKey = new Uint8Array(await crypto.subtle.decrypt(RSA_OAEP, myKeys.encryptionPrivate, buf(wrappedKey)));
  } catch {
    throw new E2eeError("UnwrapFailed");
  }
  if (contentKey.length !== 32) throw new E2eeError("UnwrapFailed");
  if (!equalBytes(await keyCommitment(contentKey), envelope.keyCommitment)) throw new E2eeError("KeyCommitmentMismatch");
  return contentKey;
}

/** The second half of `open`: decryption with a committed content key, then (V2) the padding. */
export async function decryptWithKey(envelope: EnvelopeFields, recipientsDigest: Uint8Array, contentKey: Uint8Array): Promise<Opened> {
  const header = headerOf(envelope, recipientsDigest);
  let plaintext: Uint8Array;
  try {
    plaintext = gcmsiv(contentKey, envelope.nonce, canonicalHeader(header)).decrypt(envelope.ciphertext);
  } catch {
    throw new E2eeError("DecryptFailed");
  }
  if (envelope.suite !== SUITE_V2) return { plaintext, link: undefined };
  return { plaintext: unpad(plaintext), link: await chainLink(envelope, recipientsDigest) };
}

/** RSA-OAEP wrapping of a content key for `recipient` (its key checked as for sealing). */
export async function wrapFor(recipient: RecipientDevice, contentKey: Uint8Array): Promise<Uint8Array> {
  checkRsaPublicKey(recipient.encryptionSpki);
  const publicKey = await crypto.subtle.importKey("spki", buf(recipient.encryptionSpki), RSA_OAEP, false, ["encrypt"]);
  return new Uint8Array(await crypto.subtle.encrypt(RSA_OAEP, publicKey, buf(contentKey)));
}

/** Signs `message` with the device's Ed25519 key. */
export async function signAsDevice(keys: DeviceKeys, message: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.sign("Ed25519", keys.signingPrivate, buf(message)));
}

/**
 * Opens an envelope this device sealed and keeps until the server acknowledges it (the page's
 * queue of unsent messages, see outbox.ts): its signature checked with the device's own key and
 * the device's own wrapped key opened. No inclusion proof: the server adds those on delivery, and
 * the envelope never left this browser's storage. Keeping the envelope rather than the text means
 * no plaintext at rest, also for keys sealed under a passphrase.
 */
export async function openOwn(envelope: EnvelopeFields, sender: Sender): Promise<Uint8Array> {
  const header = headerOf(envelope, await recipientsDigestOf(envelope));
  await verifySignature(header, envelope.ciphertext, envelope.signature, sender.keys.signingPublic);
  const own = envelope.wrappedKeys.find((k) => k.deviceId === sender.deviceId);
  if (!own) throw new E2eeError("NoKeyForThisDevice");
  let contentKey: Uint8Array;
  try {
    contentKey = new Uint8Array(await crypto.subtle.decrypt(RSA_OAEP, sender.keys.encryptionPrivate, buf(own.wrappedKey)));
  } catch {
    throw new E2eeError("UnwrapFailed");
  }
  if (!equalBytes(await keyCommitment(contentKey), envelope.keyCommitment)) throw new E2eeError("KeyCommitmentMismatch");
  const plaintext = gcmsiv(contentKey, envelope.nonce, canonicalHeader(header)).decrypt(envelope.ciphertext);
  return envelope.suite === SUITE_V2 ? unpad(plaintext) : plaintext;
}

// ---------------------------------------------------------------- chains (as e2ee/src/chain.rs)

export const MAX_CLOCK_AHEAD_MS = 5n * 60n * 1000n;
export const MAX_DELAY_MS = 24n * 60n * 60n * 1000n;
export const CHAIN_WINDOW = 256;
const MAX_GAPS = 32;

/** What a link tells about its chain; the same shape as the Rust `ChainAnomaly`'s JSON. */
export type ChainAnomaly =
  | { kind: "gap"; first: number; last: number }
  | { kind: "fork"; counter: number }
  | { kind: "late"; counter: number }
  | { kind: "time_ahead"; ms: number }
  | { kind: "time_delayed"; ms: number }
  | { kind: "time_backwards"; ms: number };

interface SeenLink {
  sequence: number;
  previous: string;
  hash: string;
  senderTimeMs: number;
  /** What was reported when it was first seen (reported again in every later view). */
  anomalies: ChainAnomaly[];
}

/** One sending device's chain as seen here (plain data: it is kept in IndexedDB). */
export interface DeviceChain {
  links: Record<string, SeenLink>;
  gaps: [number, number][];
}

/** Every chain of one conversation as seen here (see `ConversationChains` in chain.rs). */
export interface ConversationChains {
  runStart: number;
  runEnd: number;
  devices: Record<string, DeviceChain>;
}

export function newConversationChains(): ConversationChains {
  return { runStart: 0, runEnd: 0, devices: {} };
}

/** Records a verified V2 link and returns what is wrong with it (as the Rust `observe`). */
export function observeChain(
  chains: ConversationChains,
  sequence: number,
  senderDeviceId: string,
  link: ChainLink,
  serverTimeMs: number,
): ChainAnomaly[] {
  if (chains.runEnd === 0 || sequence > chains.runEnd + 1) {
    chains.runStart = sequence;
    chains.runEnd = sequence;
  } else if (sequence === chains.runEnd + 1) {
    chains.runEnd = sequence;
  } else if (sequence + 1 === chains.runStart) {
    chains.runStart = sequence;
  }
  const chain = (chains.devices[senderDeviceId] ??= { links: {}, gaps: [] });
  const counter = Number(link.counter);
  const hash = hex(link.envelopeHash);
  const previous = hex(link.previousEnvelopeHash);
  const seen = chain.links[counter];
  if (seen) return seen.hash === hash ? [...(seen.anomalies ?? [])] : [{ kind: "fork", counter }];
  const anomalies: ChainAnomaly[] = [];
  const before = chain.links[counter - 1];
  const after = chain.links[counter + 1];
  if ((before && before.hash !== previous) || (after && after.previous !== hash)) anomalies.push({ kind: "fork", counter });
  const counters = Object.keys(chain.links).map(Number).sort((a, b) => a - b);
  const gap = chain.gaps.findIndex(([first, last]) => first <= counter && counter <= last);
  if (gap >= 0) {
    const [first, last] = chain.gaps.splice(gap, 1)[0];
    if (first < counter) chain.gaps.push([first, counter - 1]);
    if (counter < last) chain.gaps.push([counter + 1, last]);
    anomalies.push({ kind: "late", counter });
  } else if (counters.length > 0) {
    const highest = counters[counters.length - 1];
    const newest = chain.links[highest];
    if (counter > highest + 1 && sequence > newest.sequence && newest.sequence >= chains.runStart) {
      anomalies.push({ kind: "gap", first: highest + 1, last: counter - 1 });
      chain.gaps.push([highest + 1, counter - 1]);
      if (chain.gaps.length > MAX_GAPS) chain.gaps.shift();
    }
  }
  const senderTime = link.senderTimeMs;
  const serverTime = BigInt(serverTimeMs);
  const lower = counters.filter((c) => c < counter);
  const previousTime = lower.length ? BigInt(chain.links[lower[lower.length - 1]].senderTimeMs) : undefined;
  if (senderTime > serverTime + MAX_CLOCK_AHEAD_MS) anomalies.push({ kind: "time_ahead", ms: Number(senderTime - serverTime) });
  else if (serverTime > senderTime + MAX_DELAY_MS) anomalies.push({ kind: "time_delayed", ms: Number(serverTime - senderTime) });
  else if (previousTime !== undefined && previousTime > senderTime + MAX_CLOCK_AHEAD_MS) {
    anomalies.push({ kind: "time_backwards", ms: Number(previousTime - senderTime) });
  }
  chain.links[counter] = { sequence, previous, hash, senderTimeMs: Number(senderTime), anomalies: [...anomalies] };
  const kept = Object.keys(chain.links).map(Number).sort((a, b) => a - b);
  for (const old of kept.slice(0, Math.max(0, kept.length - CHAIN_WINDOW))) delete chain.links[old];
  return anomalies;
}

/** One anomaly as words for people (as the CLI's `chains::describe`). */
export function describeAnomaly(anomaly: ChainAnomaly): string {
  switch (anomaly.kind) {
    case "gap":
      return anomaly.first === anomaly.last
        ? `message ${anomaly.first} of this sender's device never arrived (dropped or withheld)`
        : `messages ${anomaly.first} to ${anomaly.last} of this sender's device never arrived (dropped or withheld)`;
    case "fork":
      return `this sender's device shows two different histories at its message ${anomaly.counter} (a fork)`;
    case "late":
      return `message ${anomaly.counter} of this sender's device arrived late`;
    case "time_ahead":
      return `sealed ${Math.floor(anomaly.ms / 1000)} s ahead of the server's time`;
    case "time_delayed":
      return `stored ${Math.floor(anomaly.ms / 3_600_000)} h after it was sealed`;
    case "time_backwards":
      return `sealed ${Math.floor(anomaly.ms / 1000)} s before this device's previous message`;
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
