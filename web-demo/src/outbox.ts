// The queue of messages the user wrote and the server has not acknowledged yet, kept in IndexedDB
// (one record per message, per user and device) so that none is lost to a failed send, a
// reconnect or a reload. Each record holds the sealed envelope with its client message id: a
// retry resends the same envelope, which the server deduplicates (the same device, client message
// id and signature answer with the stored message), so a message whose answer was lost is stored
// once. core.ts seals, sends and reseals (after a device-list mismatch, to close the chain over a
// message refused for good or discarded, and once keys the message waited for are accepted); this
// file holds the records and the retry rules.
//
// A message written while a participant's new keys wait for the user's decision is queued too,
// held (`waitingFor`): sealed for the trusted devices only (so that this device can open its text
// again), never sent as such; once every user it waits for is trusted again it is sealed again for
// the current devices, at its place in the chain, and sent. The conversation's later messages wait
// behind it (the chain's order).

import { Code, ConnectError } from "@connectrpc/connect";

import type { EnvelopeFields } from "./e2ee";
import * as store from "./store";

/** A message waiting in the queue, as stored. */
export interface OutboxEntry {
  clientMessageId: string;
  conversationId: string;
  /** How the conversation is listed, so that a reload without the server can still show it. */
  conversation: { kind: "direct" | "group"; peerUserId: string; groupId: string; name: string };
  /** The sealed envelope (plain data: Uint8Arrays and bigints clone into IndexedDB as they are). */
  envelope: EnvelopeFields;
  /** When the user wrote it (Unix milliseconds): the queue's order, so the chain's order. */
  createdAt: number;
  /** "pending" until acknowledged; "failed" when the server refused it for good. */
  state: "pending" | "failed";
  /** Why it failed, in words (a failed entry only). */
  error?: string;
  /** Device-list mismatches in a row (each reseals for the current devices). */
  mismatches: number;
  /**
   * Held: the users (ids) whose new keys wait to be accepted; the envelope is sealed for the
   * trusted devices only and is not sent until it is sealed again once they are accepted.
   */
  waitingFor?: string[];
}

/** Whether the entry is held until the user accepts keys (see `waitingFor`). */
export function held(entry: OutboxEntry): boolean {
  return entry.state === "pending" && (entry.waitingFor?.length ?? 0) > 0;
}

/** Reseals after a device-list mismatch before the message counts as failed. */
export const MAX_MISMATCHES = 3;
const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 30_000;

/** The record's key: by user, device and time written, so that keys sort in the queue's order. */
export function entryKey(userId: string, deviceId: string, entry: Pick<OutboxEntry, "createdAt" | "clientMessageId">): string {
  return `${prefix(userId, deviceId)}${String(entry.createdAt).padStart(15, "0")}:${entry.clientMessageId}`;
}

function prefix(userId: string, deviceId: string): string {
  return `${store.keys.outboxPrefix(userId)}${deviceId}:`;
}

/** Every queued message of this device, in the order written (read afresh: other tabs write too). */
export async function load(userId: string, deviceId: string): Promise<OutboxEntry[]> {
  const keys = (await store.allKeys()).filter((key) => key.startsWith(prefix(userId, deviceId))).sort();
  const entries: OutboxEntry[] = [];
  for (const key of keys) {
    const entry = await store.get<OutboxEntry>(key);
    if (entry) entries.push(entry);
  }
  return entries;
}

export function save(userId: string, deviceId: string, entry: OutboxEntry): Promise<void> {
  return store.put(entryKey(userId, deviceId, entry), entry);
}

export function remove(userId: string, deviceId: string, entry: OutboxEntry): Promise<void> {
  return store.remove(entryKey(userId, deviceId, entry));
}

/**
 * Whether a failed send may succeed later with the same envelope: the server or the network was
 * unavailable, slow or busy (UNKNOWN is what a fetch that never reached the gateway becomes).
 * Anything else is the server's final word on this envelope (a device-list mismatch is handled
 * apart: it reseals).
 */
export function retryable(error: unknown): boolean {
  const code = ConnectError.from(error).code;
  return [Code.Unavailable, Code.DeadlineExceeded, Code.ResourceExhausted, Code.Aborted, Code.Unknown, Code.Canceled].includes(
    code,
  );
}

/** The wait before retry number `failures` (1, 2, …): exponential, capped, with full jitter on its upper half. */
export function retryDelay(failures: number): number {
  const ceiling = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** Math.min(Math.max(failures - 1, 0), 10));
  return ceiling * (0.5 + Math.random() / 2);
}
