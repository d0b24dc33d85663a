// A device's private keys sealed under a passphrase, for a browser the user does not want to
// trust with them in the clear: AES-256-GCM under a key derived by PBKDF2-SHA-256 (600,000
// iterations, OWASP's figure; WebCrypto has no argon2), with the public keys as associated data.
// The keys are generated extractable only to be sealed; what the page uses are non-extractable
// copies, and IndexedDB then holds only the sealed bytes.

import * as e2ee from "./e2ee";

export const PBKDF2_ITERATIONS = 600_000;
/** The shortest passphrase accepted. */
export const MIN_PASSPHRASE_LENGTH = 8;
const AAD_LABEL = e2ee.utf8("chat-web-demo device keys v1");
const RSA_OAEP = { name: "RSA-OAEP", hash: "SHA-256" } as const;

/** The sealed form, as stored. */
export interface SealedKeys {
  kdf: "PBKDF2-SHA-256";
  iterations: number;
  salt: Uint8Array;
  iv: Uint8Array;
  /** AES-256-GCM of: RSA PKCS#8 length (u32 big-endian), RSA PKCS#8, Ed25519 PKCS#8. */
  ciphertext: Uint8Array;
  encryptionSpki: Uint8Array;
  signingPublic: Uint8Array;
}

/** The passphrase did not open the keys. */
export class WrongPassphrase extends Error {
  constructor() {
    super("wrong passphrase for this device's keys");
  }
}

/** Generates a device's keys and seals them under `passphrase`. */
export async function generateSealed(rsaBits: number, passphrase: string): Promise<{ keys: e2ee.DeviceKeys; sealed: SealedKeys }> {
  if (passphrase.length < MIN_PASSPHRASE_LENGTH) {
    throw new Error(`the passphrase must have at least ${MIN_PASSPHRASE_LENGTH} characters`);
  }
  const rsa = (await crypto.subtle.generateKey(
    { ...RSA_OAEP, modulusLength: rsaBits, publicExponent: new Uint8Array([1, 0, 1]) },
    true,
    ["encrypt", "decrypt"],
  )) as CryptoKeyPair;
  const ed = (await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"])) as CryptoKeyPair;
  const rsaPkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", rsa.privateKey));
  const edPkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", ed.privateKey));
  const encryptionSpki = new Uint8Array(await crypto.subtle.exportKey("spki", rsa.publicKey));
  const signingPublic = new Uint8Array(await crypto.subtle.exportKey("raw", ed.publicKey));
  const plaintext = e2ee.concat(u32be(rsaPkcs8.length), rsaPkcs8, edPkcs8);
  try {
    const keys = await e2ee.importDeviceKeys(rsaPkcs8, encryptionSpki, edPkcs8, signingPublic);
    const salt = crypto.getRandomValues(new Uint8Array(16));
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const key = await derive(passphrase, salt, PBKDF2_ITERATIONS);
    const ciphertext = new Uint8Array(
      await crypto.subtle.encrypt(
        { name: "AES-GCM", iv: buf(iv), additionalData: buf(aad(encryptionSpki, signingPublic)) },
        key,
        buf(plaintext),
      ),
    );
    const sealed: SealedKeys = {
      kdf: "PBKDF2-SHA-256",
      iterations: PBKDF2_ITERATIONS,
      salt,
      iv,
      ciphertext,
      encryptionSpki,
      signingPublic,
    };
    return { keys, sealed };
  } finally {
    for (const secret of [rsaPkcs8, edPkcs8, plaintext]) secret.fill(0);
  }
}

/** Opens sealed keys (as non-extractable CryptoKeys). */
export async function unseal(sealed: SealedKeys, passphrase: string): Promise<e2ee.DeviceKeys> {
  if (sealed.kdf !== "PBKDF2-SHA-256" || sealed.iterations < PBKDF2_ITERATIONS) {
    throw new Error("this device's sealed keys are in an unknown format");
  }
  const key = await derive(passphrase, sealed.salt, sealed.iterations);
  let plaintext: Uint8Array;
  try {
    plaintext = new Uint8Array(
      await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: buf(sealed.iv), additionalData: buf(aad(sealed.encryptionSpki, sealed.signingPublic)) },
        key,
        buf(sealed.ciphertext),
      ),
    );
  } catch {
    throw new WrongPassphrase();
  }
  try {
    const length = new DataView(plaintext.buffer, plaintext.byteOffset).getUint32(0);
    const rsaPkcs8 = plaintext.slice(4, 4 + length);
    const edPkcs8 = plaintext.slice(4 + length);
    const keys = await e2ee.importDeviceKeys(rsaPkcs8, sealed.encryptionSpki, edPkcs8, sealed.signingPublic);
    rsaPkcs8.fill(0);
    edPkcs8.fill(0);
    return keys;
  } finally {
    plaintext.fill(0);
  }
}

async function derive(passphrase: string, salt: Uint8Array, iterations: number): Promise<CryptoKey> {
  const material = await crypto.subtle.importKey("raw", buf(e2ee.utf8(passphrase)), "PBKDF2", false, ["deriveKey"]);
  return crypto.subtle.deriveKey(
    { name: "PBKDF2", hash: "SHA-256", salt: buf(salt), iterations },
    material,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt", "decrypt"],
  );
}

function aad(encryptionSpki: Uint8Array, signingPublic: Uint8Array): Uint8Array {
  return e2ee.concat(AAD_LABEL, u32be(encryptionSpki.length), encryptionSpki, signingPublic);
}

function u32be(n: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n);
  return out;
}

function buf(bytes: Uint8Array): ArrayBuffer {
  return bytes.slice().buffer as ArrayBuffer;
}
