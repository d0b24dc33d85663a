// What the browser keeps, in IndexedDB: each device's keys (CryptoKeys, private halves
// non-extractable, stored as structured clones; or sealed under a passphrase, see keystore.ts),
// the session's tokens, the stream cursors, the pinned keys of contacts, the group memberships
// last shown, what sealing needs without the server (the devices of users and the members of
// groups as last listed, and the conversations as last listed: see `SealingRecord`), and what
// each conversation showed (for replay detection). One object store of small
// records, keyed by strings (the queue of unsent messages too, see outbox.ts). Logging out deletes all of a user's records unless the user chose
// "keep this device".

import type { DeviceKeys } from "./e2ee";
import type { SealedKeys } from "./keystore";

const DB_NAME = "chat-web-demo";
const STORE = "kv";

/** A device of a user on this browser (kept after logout only when `keep` is set). */
export interface DeviceRecord {
  username: string;
  userId: string;
  deviceId: string;
  /** The keys, unless they are sealed under a passphrase (then only `sealed` is stored). */
  keys?: DeviceKeys;
  /** The private keys sealed under the passphrase the user chose for this device. */
  sealed?: SealedKeys;
  /** Keep the device and its keys in this browser after logging out. */
  keep?: boolean;
}

/** A device whose keys are open (in memory). */
export type OpenDevice = DeviceRecord & { keys: DeviceKeys };

/** The logged-in session. */
export interface SessionRecord {
  username: string;
  accessToken: string;
  accessExpiresAt: number; // Unix seconds
  accessIssuedAt: number; // Unix seconds, by this browser's clock when received
  refreshToken: string;
}

/** One device's keys as pinned: computed here from the key bytes, never taken from the server. */
export interface Pin {
  /** SHA-256 of the RSA SubjectPublicKeyInfo (hex). */
  encryption: string;
  /** SHA-256 of the Ed25519 key (hex). */
  signing: string;
  /** The Ed25519 key itself (hex): verifies the device's messages, also after its revocation. */
  signingKey?: string;
  /** When this browser first saw these keys (Unix seconds). */
  firstSeenAt: number;
  /** When this browser saw the device gone from its owner's list (Unix seconds): revoked since. */
  revokedAt?: number;
}

/** Pinned keys of one user: per device (the format before pins were computed here). */
export type LegacyPins = Record<string, { encryption: string; signing: string }>;

/** What the app remembers about a contact's keys. */
export interface Contact {
  username?: string;
  /** Trusted keys by device id. */
  keys: Record<string, Pin>;
  /** Keys seen and not accepted yet: nothing is sealed for the user until they are. */
  pending: Record<string, Pin>;
  /** Whether the user compared the safety number of the trusted keys. */
  verified: boolean;
  /** The earlier format, converted when read. */
  pins?: LegacyPins;
}

/** A group's members as last shown: user id to username. */
export interface GroupPin {
  name: string;
  members: Record<string, string>;
}

/** A user's devices with their public keys as the server last listed them (hex; not trusted as
 * such: sealing still checks each against the pins). */
export interface StoredUser {
  username: string;
  devices: { deviceId: string; encryption: string; signing: string }[];
}

/** A conversation as last listed (enough to show it in the list and to seal for it). */
export interface StoredConversation {
  conversationId: string;
  kind: "direct" | "group";
  peerUserId: string;
  groupId: string;
  name: string;
  lastSequence: number;
  unread: number;
  lastMessageAt?: number; // Unix milliseconds
  createdAt: number; // Unix milliseconds
}

/**
 * What sealing needs when the server cannot be asked (a reload while it is down), per user and
 * device: the users' devices as last listed, each group's member ids as last listed, and the
 * conversations as last listed. A stale list is refused by the server with a device-list mismatch
 * once it is back, and the message sealed again for the current one.
 */
export interface SealingRecord {
  users: Record<string, StoredUser>;
  groups: Record<string, string[]>;
  conversations: StoredConversation[];
}

/** Per conversation: `senderDeviceId/clientMessageId` to the sequence it was first shown at. */
export type SeenLog = Record<string, number>;

/** Entries kept per conversation's seen log (the highest sequences). */
export const SEEN_CAPACITY = 2000;

let dbPromise: Promise<IDBDatabase> | undefined;

function db(): Promise<IDBDatabase> {
  dbPromise ??= new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  return dbPromise;
}

async function run<T>(mode: IDBTransactionMode, body: (store: IDBObjectStore) => IDBRequest): Promise<T> {
  const database = await db();
  return new Promise((resolve, reject) => {
    const request = body(database.transaction(STORE, mode).objectStore(STORE));
    request.onsuccess = () => resolve(request.result as T);
    request.onerror = () => reject(request.error);
  });
}

export function get<T>(key: string): Promise<T | undefined> {
  return run("readonly", (store) => store.get(key));
}

export function put(key: string, value: unknown): Promise<void> {
  return run("readwrite", (store) => store.put(value, key));
}

export function remove(key: string): Promise<void> {
  return run("readwrite", (store) => store.delete(key));
}

/** Every key in the store. */
export function allKeys(): Promise<string[]> {
  return run<IDBValidKey[]>("readonly", (store) => store.getAllKeys()).then((keys) => keys.map(String));
}

/** Deletes everything this browser holds for a user: device keys, session, cursors, pins, logs, unsent messages, sealing lists. */
export async function forgetUser(username: string, userId: string): Promise<void> {
  const mine = [
    keys.device(username),
    keys.session,
    keys.cursors(userId),
    keys.contacts(userId),
    keys.groups(userId),
    keys.sendingChains(userId),
    keys.forwarded(userId),
  ];
  // The queue of unsent messages goes with the device: sealed for it, sendable only by it.
  const prefixes = [keys.seenPrefix(userId), keys.outboxPrefix(userId), keys.sealingPrefix(userId)];
  const logs = (await allKeys()).filter((key) => prefixes.some((prefix) => key.startsWith(prefix)));
  for (const key of [...mine, ...logs]) await remove(key);
}

/**
 * The form usernames compare in, as on the server (NFKC, then lowercase): `Bob`, `BOB` and
 * full-width `Ｂｏｂ` are one user, so one device record. Records written before were keyed by
 * lowercase names, which this leaves as they are.
 */
export function canonicalUsername(username: string): string {
  return username.normalize("NFKC").toLowerCase();
}

export const keys = {
  device: (username: string) => `device:${canonicalUsername(username)}`,
  session: "session",
  cursors: (userId: string) => `cursors:${userId}`,
  contacts: (userId: string) => `contacts:${userId}`,
  /** Suite V2: this device's position in each conversation's chain (core.ts `SendingChain`). */
  sendingChains: (userId: string) => `sending-chains:${userId}`,
  /** Suite V2: what this device saw of every other device's chain, by conversation. */
  receivedChains: (userId: string) => `received-chains:${userId}`,
  /** Decryption failures per sending device, budgeted (core.ts `DecryptionFailures`). */
  decryptionFailures: (userId: string) => `decryption-failures:${userId}`,
  groups: (userId: string) => `groups:${userId}`,
  /** Per other device of the user and conversation, the last sequence whose keys were forwarded to it. */
  forwarded: (userId: string) => `forwarded:${userId}`,
  seenPrefix: (userId: string) => `seen:${userId}:`,
  seen: (userId: string, conversationId: string) => `seen:${userId}:${conversationId}`,
  /** What sealing needs without the server (`SealingRecord`), per user and device. */
  sealingPrefix: (userId: string) => `sealing:${userId}:`,
  sealing: (userId: string, deviceId: string) => `sealing:${userId}:${deviceId}`,
  /** The queue of unsent messages (outbox.ts): one record per message, `outbox:<user>:<device>:…`. */
  outboxPrefix: (userId: string) => `outbox:${userId}:`,
};
