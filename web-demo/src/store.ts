// What the browser keeps, in IndexedDB: each device's keys (CryptoKeys, private halves
// non-extractable, stored as structured clones), the session's tokens, the stream cursors and the
// pinned keys of contacts. One object store of small records, keyed by strings.

import type { DeviceKeys } from "./e2ee";

const DB_NAME = "chat-web-demo";
const STORE = "kv";

/** A device of a user on this browser (kept after logout, so a later login resumes it). */
export interface DeviceRecord {
  username: string;
  userId: string;
  deviceId: string;
  keys: DeviceKeys;
}

/** The logged-in session. */
export interface SessionRecord {
  username: string;
  accessToken: string;
  accessExpiresAt: number; // Unix seconds
  accessIssuedAt: number; // Unix seconds, by this browser's clock when received
  refreshToken: string;
}

/** Pinned keys of one user: per device, its encryption and signing fingerprints (hex). */
export type Pins = Record<string, { encryption: string; signing: string }>;

/** What the app remembers about a contact's keys. */
export interface Contact {
  pins: Pins;
  verified: boolean;
}

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

export const keys = {
  device: (username: string) => `device:${username}`,
  session: "session",
  cursors: (userId: string) => `cursors:${userId}`,
  contacts: (userId: string) => `contacts:${userId}`,
  /** Suite V2: this device's position in each conversation's chain (core.ts `SendingChain`). */
  sendingChains: (userId: string) => `sending-chains:${userId}`,
  /** Suite V2: what this device saw of every other device's chain, by conversation. */
  receivedChains: (userId: string) => `received-chains:${userId}`,
};
