// The page's trust decisions, without I/O (the same rules as the Rust client's
// client/src/contacts.rs): how a contact's pins change when the server lists devices, when a
// user counts as trusted for sealing, which key verifies a sender's message, and replay
// detection. core.ts applies them; tests/trust.test.ts checks them in Node.

import type { Contact, Pin, SeenLog } from "./store";

/** What a review found, for the notice shown to the user. */
export interface Review {
  changes: string[];
  /** Whether nothing is to be sealed for the user until the change is accepted. */
  blocked: boolean;
}

export function samePin(a: Pin, b: Pin): boolean {
  return a.encryption === b.encryption && a.signing === b.signing;
}

/**
 * Reviews the devices the server lists now (`observed`, pinned as computed here) against the
 * contact's pins, updating them: a device whose keys differ from its pin (or that came back after
 * its revocation) is pending for any contact; a new device is pending for a verified contact and
 * pinned otherwise; a device gone is revoked from `now`. A change already pending is not reported
 * again.
 */
export function review(known: Contact, observed: Map<string, Pin>, now: number): Review {
  const changes: string[] = [];
  for (const [deviceId, pin] of observed) {
    const old = known.keys[deviceId];
    const alreadyPending = !!known.pending[deviceId] && samePin(known.pending[deviceId], pin);
    if (old && old.revokedAt === undefined && samePin(old, pin)) {
      old.signingKey ??= pin.signingKey;
      delete known.pending[deviceId];
    } else if (old) {
      if (!alreadyPending) changes.push(old.revokedAt === undefined ? "a device's keys changed" : "a revoked device came back");
      known.pending[deviceId] = pin;
    } else if (known.verified) {
      if (!alreadyPending) changes.push("a new device was added");
      known.pending[deviceId] = pin;
    } else {
      known.keys[deviceId] = pin;
      changes.push("a new device was added");
    }
  }
  for (const [deviceId, pin] of Object.entries(known.keys)) {
    if (pin.revokedAt === undefined && !observed.has(deviceId)) {
      pin.revokedAt = now;
      changes.push("a device was removed");
    }
  }
  for (const deviceId of Object.keys(known.pending)) if (!observed.has(deviceId)) delete known.pending[deviceId];
  return { changes, blocked: Object.keys(known.pending).length > 0 };
}

/** Trusts exactly the keys listed now (pending changes accepted), marked verified or not. */
export function accept(contact: Contact, observed: Map<string, Pin>, verified: boolean, now: number): void {
  for (const [deviceId, pin] of observed) {
    const old = contact.keys[deviceId];
    if (!old || old.revokedAt !== undefined || !samePin(old, pin)) contact.keys[deviceId] = pin;
  }
  for (const [deviceId, pin] of Object.entries(contact.keys)) {
    if (!observed.has(deviceId) && pin.revokedAt === undefined) pin.revokedAt = now;
  }
  contact.pending = {};
  contact.verified = verified;
}

/** Whether the device may be sealed for: pinned, not revoked, the same keys, nothing pending. */
export function trusted(contact: Contact | undefined, deviceId: string, pin: Pin): boolean {
  const known = contact?.keys[deviceId];
  return (
    !!contact && Object.keys(contact.pending).length === 0 && !!known && known.revokedAt === undefined && samePin(known, pin)
  );
}

/**
 * The Ed25519 key (hex) that verifies a message of the device stamped `sentAt` by the server: the
 * trusted pin's (a pending key never verifies; the pinned one still verifies what it signed);
 * undefined when the device is not pinned; an error for a new device not accepted yet, or a
 * device revoked before the message (one stamped in the second the revocation was noticed is
 * given the benefit of the doubt: the stamp is the server's clock, the revocation this browser's).
 */
export function senderKey(contact: Contact | undefined, deviceId: string, sentAt: number): string | undefined {
  const pin = contact?.keys[deviceId];
  if (!pin && contact?.pending[deviceId]) throw new Error("the sender's device is new and not accepted yet");
  if (!pin?.signingKey) return undefined;
  if (pin.revokedAt !== undefined && sentAt > pin.revokedAt) throw new Error("the device was revoked before this message");
  return pin.signingKey;
}

/**
 * Records a verified message in a conversation's seen log; returns the sequence it was first
 * shown at when that is another one (a replay). At most `capacity` entries are kept (the highest
 * sequences).
 */
export function recordSeen(log: SeenLog, key: string, sequence: number, capacity: number): number | undefined {
  const first = log[key];
  if (first !== undefined) return first === sequence ? undefined : first;
  log[key] = sequence;
  const entries = Object.entries(log);
  if (entries.length > capacity) {
    const [oldest] = entries.reduce((a, b) => (b[1] < a[1] ? b : a));
    delete log[oldest];
  }
  return undefined;
}

/** Contacts stored before pins were computed here: their fingerprints came from the server; kept
 * as the pins (what was trusted on first use then). */
export function upgradeContacts(contacts: Record<string, Contact>, now: number): Record<string, Contact> {
  for (const contact of Object.values(contacts)) {
    if (contact.keys) continue;
    contact.keys = {};
    for (const [deviceId, pin] of Object.entries(contact.pins ?? {})) {
      contact.keys[deviceId] = { encryption: pin.encryption, signing: pin.signing, firstSeenAt: now };
    }
    contact.pending = {};
    delete contact.pins;
  }
  return contacts;
}
