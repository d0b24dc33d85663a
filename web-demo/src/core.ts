// The client logic, without any DOM: login (device keys generated here and uploaded, optionally
// sealed under a passphrase), sending (sealed for every device, queued in IndexedDB until the
// server acknowledges it, retried with the same envelope, sealed again only after a device-list
// mismatch; see outbox.ts), opening delivered messages (verified, never shown when a check fails), the live
// stream (Subscribe from per-conversation cursors, reconnecting with backoff and resuming),
// history pages, acknowledgements, receipts, typing, groups, key pinning and safety numbers. The
// same behaviour as the Rust client (client/src), which it interoperates with.
//
// Trust, as in the Rust client (client/src/contacts.rs): every fingerprint is computed here from
// the key bytes used (the server's fingerprint fields are ignored) and pinned on first use. A
// device whose keys differ from its pin, or a new device of a verified contact, is refused (no
// send to that user, no message verified with it) until the user accepts it; a new device of a
// contact who is not verified is pinned; every change is reported (a notice in the conversation)
// before anything is sealed for it. Group memberships are pinned too. A device gone from its
// owner's list is revoked from then on: its messages stamped later are refused. What each
// conversation showed is kept in IndexedDB, so a replayed envelope is flagged after a reload too;
// a message is only shown in the conversation it belongs to.

import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";

import { Api, SessionEnded, Tokens, sessionFrom } from "./api";
import * as e2ee from "./e2ee";
import * as forwarding from "./forwarding";
import { UserWithDevicesSchema, type Device, type User, type UserWithDevices } from "./gen/auth/v1/auth_pb";
import {
  ConversationKind,
  Direction,
  type Conversation,
  type Message,
  type StreamEvent,
} from "./gen/chat/v1/chat_pb";
import { Role, type Group } from "./gen/group/v1/group_pb";
import * as keystore from "./keystore";
import * as outbox from "./outbox";
import * as store from "./store";
import * as trust from "./trust";
export { unreadableRuns, unreadableText, type UnreadableRun } from "./unreadable";
import type { Contact, DeviceRecord, GroupPin, OpenDevice, Pin, SealingRecord, SeenLog, StoredUser } from "./store";

export type ConnectionState = "connecting" | "online" | "offline";

export interface ShownMessage {
  messageId: string;
  conversationId: string;
  sequence: number;
  sentAt: Date;
  senderUserId: string;
  senderName: string;
  senderDeviceId: string;
  clientMessageId: string;
  mine: boolean;
  /** The text, or undefined when the message failed verification or is a replay. */
  text: string | undefined;
  /** What is wrong with the sender device's chain at this message (suite V2), in words. */
  chainWarnings: string[];
  /** For a replay: the sequence the same envelope was first shown at. */
  replayOf?: number;
  /** The sending device used up its budget of decryption failures: this one was not attempted. */
  notAttempted?: boolean;
}

/** A message the user wrote that the server has not acknowledged (see Core.send and outbox.ts). */
export interface UnsentMessage {
  clientMessageId: string;
  conversationId: string;
  text: string;
  createdAt: Date;
  /** "pending": retried until the server answers; "failed": refused for good (see `error`). */
  state: "pending" | "failed";
  error?: string;
  /** A pending message held until the user accepts these users' new keys (their names). */
  waitingFor?: string[];
}

/** This device's chain in one conversation (suite V2), kept in IndexedDB. */
interface SendingChain {
  counter: string; // a bigint, as text
  lastHash: string;
  lastClientMessageId: string;
  previousOfLast: string;
}

/** Decryption failures per sending device (or "v1"), in the window that began with the first. */
type DecryptionFailures = Record<string, { count: number; since: number }>;

/** Decryption failures allowed per sending device per hour (as the CLI's chains.rs). */
const MAX_FAILURES_PER_SENDER = 5;
const FAILURE_WINDOW_MS = 3_600_000;

export interface ConversationView {
  conversationId: string;
  kind: "direct" | "group";
  peerUserId: string;
  groupId: string;
  name: string;
  lastSequence: number;
  unread: number;
  /** When the server accepted the newest message; undefined when there is none. */
  lastMessageAt?: Date;
  createdAt: Date;
  /** The newest message as opened here (see refreshPreviews); undefined until it is. */
  preview?: Preview;
  /** The sequence `preview` was opened at. */
  previewSequence?: number;
  /** What tells a group from others of the same name (its member count and the end of its id). */
  tag?: string;
}

/** One of the user's devices, as the devices screen lists it. */
export interface DeviceView {
  deviceId: string;
  name: string;
  current: boolean;
  createdAt?: Date;
  lastSeenAt?: Date;
}

/**
 * The newest message of a conversation in the list: its text only when this device verified it,
 * as in the conversation; otherwise a placeholder (failed verification, a replay, or a message
 * not encrypted for this device, which the server does not even list).
 */
export type Preview = { shown: true; from: string; text: string; flagged: boolean } | { shown: false };

/** How many characters of a message a preview keeps (as the CLI's PREVIEW_CHARS). */
export const PREVIEW_CHARS = 60;
/** How many conversations get a preview (the most recent: each costs a ListMessages call and a
 * decryption), as the CLI's DEFAULT_PREVIEWS. */
export const MAX_PREVIEWS = 20;

/** Refuses a message with no visible text, as the CLI does: the server cannot tell (it sees the
 * padded ciphertext only), so every client checks before sealing. */
export function checkText(text: string): void {
  if (text.trim() === "") throw new Error("the message is empty: nothing was sent");
}

/** The start of a message on one line (control characters as spaces), cut with "…". */
export function previewText(text: string): string {
  // eslint-disable-next-line no-control-regex
  const line = text.trim().replace(/[\u0000-\u001f\u007f-\u009f]/g, " ");
  const chars = [...line];
  return chars.length > PREVIEW_CHARS ? `${chars.slice(0, PREVIEW_CHARS - 1).join("").trimEnd()}…` : line;
}

/** The preview of an opened message. */
export function previewOf(message: ShownMessage): Preview {
  if (message.text === undefined) return { shown: false };
  return {
    shown: true,
    from: message.mine ? "you" : message.senderName,
    text: previewText(message.text),
    flagged: message.chainWarnings.length > 0,
  };
}

/** When the conversation last changed: its newest message, else its creation (the server's order). */
export function lastActivity(c: ConversationView): number {
  return (c.lastMessageAt ?? c.createdAt).getTime();
}

export interface KeyWarning {
  userId: string;
  username: string;
  what: string;
  /** Whether nothing is sent to the user until the change is accepted ("Accept the new keys"). */
  blocked: boolean;
}

/** Something to show in the conversations it concerns: a key or membership change. */
export interface Notice {
  kind: "keys" | "members";
  /** The user whose keys changed (a key notice). */
  userId?: string;
  /** The group whose members changed (a membership notice). */
  groupId?: string;
  text: string;
  blocked: boolean;
}

/** What the core tells the UI. */
export interface CoreEvents {
  connection(state: ConnectionState, detail: string): void;
  conversations(): void;
  message(message: ShownMessage, live: boolean): void;
  receipt(conversationId: string, userId: string, readSequence: number): void;
  typing(conversationId: string, userId: string): void;
  keyWarning(warning: KeyWarning): void;
  /** A conversation is gone from the list (a group deleted, or left or removed from). */
  removed(conversationId: string): void;
  /** A group's name, members or roles changed (here or by someone else). */
  groupChanged(groupId: string): void;
  /** A key or membership change: shown before anything is sealed for it. */
  notice(notice: Notice): void;
  /** The unsent messages of a conversation changed (queued, failed, acknowledged, discarded). */
  unsent(conversationId: string): void;
  /**
   * Another device of this user forwarded keys of a conversation's earlier messages to this one
   * (the stream's `keysForwarded`, after the messages received before it are shown): what this
   * page could not read may now be listed with them.
   */
  keysForwarded(conversationId: string): void;
  sessionEnded(): void;
}

/** Options of a login. */
export interface LoginOptions {
  rsaBits?: number;
  /** Keep the device and its keys in this browser after logout. */
  keep?: boolean;
  /** Seal a new device's keys under this passphrase; opens an existing device's sealed keys. */
  passphrase?: string;
}

const HISTORY_PAGE = 30;
const HEARTBEAT_TIMEOUT_MS = 40_000;
const MAX_BACKOFF_MS = 5_000;

export async function register(api: Api, username: string, password: string): Promise<void> {
  await api.auth.register({ username, password, displayName: username });
}

/**
 * Logs in as `username`: resumes this browser's device of that user when there is one (its keys
 * stay in IndexedDB, sealed or not), otherwise creates a device, generates its keys (sealed under
 * `options.passphrase` when given) and uploads the public halves.
 */
export async function login(api: Api, username: string, password: string, options: LoginOptions = {}): Promise<Core> {
  const rsaBits = options.rsaBits ?? 3072;
  if (options.passphrase !== undefined && options.passphrase === password) {
    // The server receives the password at every login: keys sealed with it would be open to it.
    throw new Error("The passphrase of this device's keys must not be your password.");
  }
  if (options.passphrase !== undefined && options.passphrase.length < keystore.MIN_PASSPHRASE_LENGTH) {
    throw new Error(`The passphrase of this device's keys needs at least ${keystore.MIN_PASSPHRASE_LENGTH} characters.`);
  }
  const existing = await store.get<DeviceRecord>(store.keys.device(username));
  let keys = existing?.keys;
  if (existing?.sealed && !keys) {
    if (!options.passphrase) throw new Error("This device's keys are locked: enter their passphrase.");
    keys = await keystore.unseal(existing.sealed, options.passphrase);
  }
  const request = { username, password, deviceId: existing?.deviceId ?? "", deviceName: browserName() };
  let response;
  try {
    response = await api.auth.login(request);
  } catch (error) {
    // This browser's device was revoked: log in as a new device, with new keys.
    if (!existing || ConnectError.from(error).code !== Code.NotFound) throw error;
    response = await api.auth.login({ ...request, deviceId: "" });
    keys = undefined;
  }
  const user = response.user!;
  const device = response.device!;
  const session = sessionFrom(user.username, response.tokens);
  const tokens = new Tokens(api, session);
  let sealed = existing?.sealed;
  if (!keys || device.deviceId !== existing?.deviceId) {
    if (options.passphrase) {
      ({ keys, sealed } = await keystore.generateSealed(rsaBits, options.passphrase));
    } else {
      keys = await e2ee.generateDeviceKeys(rsaBits);
      sealed = undefined;
    }
  }
  const open = keys;
  const published = device.keys?.encryptionPublicKey;
  if (!published || !e2ee.equalBytes(published, open.encryptionSpki)) {
    await tokens.call((o) =>
      api.auth.uploadDeviceKeys({ keys: { encryptionPublicKey: open.encryptionSpki, signingPublicKey: open.signingPublic } }, o),
    );
  }
  const record: DeviceRecord = {
    username: user.username,
    userId: user.userId,
    deviceId: device.deviceId,
    keys: sealed ? undefined : open,
    sealed,
    keep: options.keep ?? existing?.keep ?? false,
  };
  await store.put(store.keys.device(user.username), record);
  await store.put(store.keys.session, session);
  return new Core(api, tokens, { ...record, keys: open });
}

/** A saved session whose device keys are sealed: they open with the passphrase. */
export class LockedDevice {
  constructor(
    private readonly api: Api,
    private readonly session: store.SessionRecord,
    readonly device: DeviceRecord,
  ) {}

  async unlock(passphrase: string): Promise<Core> {
    const keys = await keystore.unseal(this.device.sealed!, passphrase);
    return new Core(this.api, new Tokens(this.api, this.session), { ...this.device, keys });
  }

  /** Ends the session without the keys (they stay sealed in this browser). */
  async logout(): Promise<void> {
    try {
      await new Tokens(this.api, this.session).call((o) => this.api.auth.logout({}, o));
    } catch {
      // An ended session is logged out already.
    }
    await forgetSession();
  }
}

/** The saved session, if any (a page reload resumes it without a password). */
export async function resume(api: Api): Promise<Core | LockedDevice | undefined> {
  const session = await store.get<store.SessionRecord>(store.keys.session);
  if (!session) return undefined;
  const device = await store.get<DeviceRecord>(store.keys.device(session.username));
  if (!device) return undefined;
  if (!device.keys) return device.sealed ? new LockedDevice(api, session, device) : undefined;
  return new Core(api, new Tokens(api, session), { ...device, keys: device.keys });
}

/** Forgets the saved session (the device and its keys stay). */
export async function forgetSession(): Promise<void> {
  await store.remove(store.keys.session);
}

function browserName(): string {
  if (typeof navigator === "undefined") return "a browser";
  const data = (navigator as { userAgentData?: { brands?: { brand: string }[]; platform?: string } }).userAgentData;
  return deviceName(navigator.userAgent, data?.brands?.map((b) => b.brand) ?? [], data?.platform ?? "");
}

/**
 * The name a browser's device gets, e.g. "Chromium on Linux": the browser from the user agent
 * (Chrome and Chromium send the same one; only the client hints' brands tell Chrome) and the
 * operating system.
 */
export function deviceName(agent: string, brands: string[] = [], platform = ""): string {
  const browser = /Edg(e|A|iOS)?\//.test(agent) || brands.includes("Microsoft Edge")
    ? "Edge"
    : /OPR\//.test(agent) || brands.includes("Opera")
      ? "Opera"
      : /Firefox\/|FxiOS/.test(agent)
        ? "Firefox"
        : brands.includes("Google Chrome") || /CriOS/.test(agent)
          ? "Chrome"
          : /Chrom(e|ium)\//.test(agent)
            ? "Chromium"
            : /Safari\//.test(agent)
              ? "Safari"
              : "Browser";
  const system = /Android/.test(agent)
    ? "Android"
    : /iPhone|iPad|iPod/.test(agent)
      ? "iOS"
      : /CrOS/.test(agent)
        ? "ChromeOS"
        : /Windows/.test(agent)
          ? "Windows"
          : /Macintosh|Mac OS X/.test(agent)
            ? "macOS"
            : /Linux|X11/.test(agent)
              ? "Linux"
              : platform;
  return system ? `${browser} on ${system}` : browser;
}

export class Core {
  readonly conversations = new Map<string, ConversationView>();
  private readonly users = new Map<string, UserWithDevices>();
  private readonly groups = new Map<string, Group>();
  private readonly seenMessages = new Set<string>();
  private readonly seenLogs = new Map<string, SeenLog>();
  private readonly notices: Notice[] = [];
  /** Member user ids of each group, as last listed. */
  private readonly memberIds = new Map<string, Set<string>>();
  /** How many listings of the conversations started, and the last one that listed each. */
  private listings = 0;
  private readonly listedIn = new Map<string, number>();
  /** Members' roles in each group, as last listed. */
  private readonly roles = new Map<string, Map<string, Role>>();
  /** Whether the browser has a network (its online/offline events; see networkChanged). */
  private network = typeof navigator === "undefined" ? true : navigator.onLine;
  private networkBack: (() => void)[] = [];
  private cursors: Record<string, number> = {};
  private contacts: Record<string, Contact> = {};
  private sendingChains: Record<string, SendingChain> = {};
  private receivedChains: Record<string, e2ee.ConversationChains> = {};
  /** Seals of one conversation one after the other: each names the previous one's hash. */
  /** Received messages being opened, in order (see onMessage). */
  private opening: Promise<void> = Promise.resolve();
  /** The refresh of previews running, if any (they run one at a time, beside `opening`). */
  private previewing: Promise<void> = Promise.resolve();
  private groupPins: Record<string, GroupPin> = {};
  /** What sealing needs without the server, as last listed (kept in IndexedDB, see store.ts). */
  private sealing: SealingRecord = { users: {}, groups: {}, conversations: [] };
  /** Reviews of users' keys, one at a time (each reads and writes the pins). */
  private reviewing: Promise<void> = Promise.resolve();
  private stream: AbortController | undefined;
  private stopped = false;
  /** The queue's messages as shown (texts opened from their envelopes), by client message id. */
  private readonly unsentMessages = new Map<string, UnsentMessage>();
  /** The passes over the queue, one after the other; whether one waits to run; the retry timer. */
  private flushing: Promise<void> = Promise.resolve();
  private flushWaiting = false;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private retryFailures = 0;
  listeners: Partial<CoreEvents> = {};
  state: ConnectionState = "offline";
  /** How many times the stream was opened again after an end or error. */
  reconnects = 0;

  constructor(
    readonly api: Api,
    readonly tokens: Tokens,
    readonly device: OpenDevice,
  ) {}

  get userId(): string {
    return this.device.userId;
  }

  get username(): string {
    return this.device.username;
  }

  /** Loads what is stored and starts the live stream. */
  async start(): Promise<void> {
    this.cursors = (await store.get(store.keys.cursors(this.userId))) ?? {};
    const stored = (await store.get<Record<string, Contact>>(store.keys.contacts(this.userId))) ?? {};
    this.contacts = trust.upgradeContacts(stored, Math.floor(Date.now() / 1000));
    this.groupPins = (await store.get(store.keys.groups(this.userId))) ?? {};
    this.sendingChains = (await store.get(store.keys.sendingChains(this.userId))) ?? {};
    this.receivedChains = (await store.get(store.keys.receivedChains(this.userId))) ?? {};
    const sealing = await store.get<SealingRecord>(store.keys.sealing(this.userId, this.device.deviceId));
    if (sealing) this.sealing = sealing;
    try {
      await this.refreshConversations();
    } catch (error) {
      // Offline at start: the stream keeps trying and lists the conversations once it connects.
      // Meanwhile the conversations are the ones last listed, so that the user can write in any
      // of them (sealed for the devices and members last listed).
      if (error instanceof SessionEnded) throw error;
      this.showStoredConversations();
    }
    // What was written and not acknowledged before the reload: shown, in its conversation even
    // when the server cannot list it now, and sent again.
    const queued = await outbox.load(this.userId, this.device.deviceId);
    for (const entry of queued) {
      if (this.conversations.has(entry.conversationId)) continue;
      this.conversations.set(entry.conversationId, {
        conversationId: entry.conversationId,
        ...entry.conversation,
        lastSequence: 0,
        unread: 0,
        createdAt: new Date(entry.createdAt),
      });
    }
    await this.noteUnsent(queued);
    if (queued.length) this.listeners.conversations?.();
    this.flushOutbox();
    void this.runStream();
    // History for the user's devices added later (forwarding.ts): a failure waits for the next try.
    void this.forwardKeys().catch(() => undefined);
  }

  /** Forwarding runs one at a time. */
  private forwarding: Promise<number> = Promise.resolve(0);
  /** Keys this page forwarded since it started. */
  forwardedKeys = 0;

  /**
   * Forwards, to every other device of this user that this page trusts, the keys of the messages it
   * holds a wrapped key of and that device was not sealed for (forwarding.ts); returns how many the
   * server stored. Each device's position per conversation is kept in IndexedDB.
   */
  forwardKeys(): Promise<number> {
    const run = this.forwarding.then(() => this.forwardKeysNow());
    this.forwarding = run.catch(() => 0);
    return run;
  }

  private async forwardKeysNow(): Promise<number> {
    const [me] = await this.usersById([this.userId], true);
    await this.reviewing;
    if (!me) return 0;
    const observed = await this.observed(me);
    const targets: e2ee.RecipientDevice[] = [];
    for (const [deviceId, { pin, spki }] of observed) {
      if (deviceId !== this.device.deviceId && trust.trusted(this.contacts[this.userId], deviceId, pin)) {
        targets.push({ deviceId, encryptionSpki: spki });
      }
    }
    if (!targets.length) return 0;
    const cursorsKey = store.keys.forwarded(this.userId);
    const cursors = (await store.get<Record<string, Record<string, number>>>(cursorsKey)) ?? {};
    let stored = 0;
    for (const conversation of this.conversations.values()) {
      for (const target of targets) {
        const done = cursors[target.deviceId]?.[conversation.conversationId] ?? 0;
        if (conversation.lastSequence <= done) continue;
        const reached = await this.forwardConversation(conversation.conversationId, target, done, (n) => (stored += n));
        (cursors[target.deviceId] ??= {})[conversation.conversationId] = reached;
        await store.put(cursorsKey, cursors);
      }
    }
    this.forwardedKeys += stored;
    return stored;
  }

  /** Forwards one conversation's keys after `from` to `target`; returns the last sequence examined. */
  private async forwardConversation(
    conversationId: string,
    target: e2ee.RecipientDevice,
    from: number,
    count: (stored: number) => void,
  ): Promise<number> {
    let batch: Awaited<ReturnType<typeof forwarding.forwardKey>>[] = [];
    const upload = async () => {
      const keys = batch;
      batch = [];
      const answer = await this.tokens.call((o) => this.api.chat.forwardKeys({ conversationId, keys }, o));
      count(answer.storedCount);
    };
    for (;;) {
      const page = await this.tokens.call((o) =>
        this.api.chat.listMessages(
          { conversationId, direction: Direction.FORWARD, fromSequence: BigInt(from), pageSize: 200, includeAllRecipients: true },
          o,
        ),
      );
      for (const message of page.messages) {
        from = Math.max(from, Number(message.sequence));
        if (!forwarding.shouldForward(message, this.device.deviceId, target.deviceId)) continue;
        const envelope = message.envelope!;
        try {
          const sentAt = Number(message.sentAt?.seconds ?? 0n);
          const senderKey = await this.signingKey(envelope.senderUserId, envelope.senderDeviceId, sentAt);
          batch.push(
            forwarding.hasOwnKey(message, this.device.deviceId)
              ? await forwarding.forwardKey(message, this.userId, this.device.deviceId, this.device.keys, senderKey, target)
              : await this.reforward(message, senderKey, target),
          );
        } catch {
          // A message this device does not verify is not forwarded.
        }
        if (batch.length === forwarding.KEYS_PER_CALL) await upload();
      }
      if (page.nextFromSequence === 0n) break;
    }
    if (batch.length) await upload();
    return from;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.stream?.abort();
    this.networkChanged(true);
  }

  /**
   * The browser lost or found its network (its offline and online events): offline at once, the
   * stream dropped (it might otherwise hang until the heartbeat watchdog), and no reconnection
   * attempt until the network is back; then at once, without waiting out a backoff.
   */
  networkChanged(online: boolean): void {
    this.network = online;
    if (!online) {
      this.stream?.abort();
      this.setState("offline", "no network");
      return;
    }
    for (const resume of this.networkBack.splice(0)) resume();
    this.flushOutbox();
  }

  private async untilNetwork(): Promise<void> {
    while (!this.network && !this.stopped) {
      this.setState("offline", "no network");
      await new Promise<void>((resolve) => this.networkBack.push(resolve));
    }
  }

  /**
   * Logs out. Unless the user chose to keep this device, the device is revoked and everything
   * this browser holds for the user is deleted: keys, refresh token, cursors, pins, logs.
   */
  async logout(): Promise<void> {
    this.stop();
    const keep = this.device.keep ?? false;
    try {
      if (keep) {
        await this.tokens.call((options) => this.api.auth.logout({}, options));
      } else {
        // Revoking ends the device's sessions too; its keys go with it.
        await this.tokens.call((o) => this.api.auth.revokeDevice({ deviceId: this.device.deviceId }, o));
      }
    } catch {
      // An ended session is logged out already; the local data goes either way.
    }
    if (keep) await store.remove(store.keys.session);
    else await store.forgetUser(this.username, this.userId);
  }

  // ------------------------------------------------------------ conversations

  async refreshConversations(): Promise<void> {
    const run = ++this.listings;
    const listed: Conversation[] = [];
    let pageToken = "";
    do {
      const page = await this.tokens.call((o) => this.api.chat.listConversations({ pageSize: 100, pageToken }, o));
      listed.push(...page.conversations);
      pageToken = page.nextPageToken;
    } while (pageToken);
    if (listed.some((c) => c.groupId)) await this.refreshGroups();
    await this.usersById(listed.map((c) => c.peerUserId).filter((id) => id));
    const listedIds = new Set(listed.map((c) => c.conversationId));
    for (const conversationId of [...this.conversations.keys()]) {
      // A listing that started before a newer one listed it is older than it: not a removal.
      if (listedIds.has(conversationId) || (this.listedIn.get(conversationId) ?? 0) > run) continue;
      this.conversations.delete(conversationId);
      this.listeners.removed?.(conversationId);
    }
    for (const c of listed) {
      const previous = this.conversations.get(c.conversationId);
      this.listedIn.set(c.conversationId, Math.max(run, this.listedIn.get(c.conversationId) ?? 0));
      const listedAt = c.lastMessageAt ? timestampDate(c.lastMessageAt) : undefined;
      this.conversations.set(c.conversationId, {
        conversationId: c.conversationId,
        kind: c.kind === ConversationKind.GROUP ? "group" : "direct",
        peerUserId: c.peerUserId,
        groupId: c.groupId,
        name: c.groupId
          ? `# ${this.groups.get(c.groupId)?.name ?? "group"}`
          : (this.users.get(c.peerUserId)?.user?.username ?? c.peerUserId),
        lastSequence: Math.max(Number(c.lastSequence), previous?.lastSequence ?? 0),
        unread: Number(c.unreadCount),
        // A message shown live may be newer than the listing.
        lastMessageAt:
          previous?.lastMessageAt && (!listedAt || previous.lastMessageAt > listedAt) ? previous.lastMessageAt : listedAt,
        createdAt: c.createdAt ? timestampDate(c.createdAt) : new Date(0),
        preview: previous?.preview,
        previewSequence: previous?.previewSequence,
      });
    }
    this.tagGroups();
    this.listeners.conversations?.();
    void this.refreshPreviews();
    this.sealing.conversations = [...this.conversations.values()].map((c) => ({
      conversationId: c.conversationId,
      kind: c.kind,
      peerUserId: c.peerUserId,
      groupId: c.groupId,
      name: c.name,
      lastSequence: c.lastSequence,
      unread: c.unread,
      lastMessageAt: c.lastMessageAt?.getTime(),
      createdAt: c.createdAt.getTime(),
    }));
    await this.saveSealing();
  }

  /** The conversations as last listed, shown while the server cannot list them. */
  private showStoredConversations(): void {
    for (const c of this.sealing.conversations) {
      if (this.conversations.has(c.conversationId)) continue;
      this.conversations.set(c.conversationId, {
        ...c,
        lastMessageAt: c.lastMessageAt === undefined ? undefined : new Date(c.lastMessageAt),
        createdAt: new Date(c.createdAt),
      });
    }
    this.tagGroups();
    this.listeners.conversations?.();
  }

  private saveSealing(): Promise<void> {
    return store.put(store.keys.sealing(this.userId, this.device.deviceId), this.sealing);
  }

  /** Groups of the same name get a tag each (member count and the end of the id). */
  private tagGroups(): void {
    const byName = new Map<string, number>();
    for (const c of this.conversations.values()) {
      if (c.kind === "group") byName.set(c.name, (byName.get(c.name) ?? 0) + 1);
    }
    for (const c of this.conversations.values()) {
      if (c.kind !== "group" || (byName.get(c.name) ?? 0) < 2) {
        c.tag = undefined;
        continue;
      }
      const count = this.groups.get(c.groupId)?.memberCount ?? 0;
      // The end of the id: its start is a time (UUIDv7), alike for groups made the same day.
      c.tag = `${count} ${count === 1 ? "member" : "members"} · …${c.groupId.slice(-6)}`;
    }
  }

  /** Most recent activity first (the newest message, else the creation), then by name. */
  sortedConversations(): ConversationView[] {
    return [...this.conversations.values()].sort((a, b) => lastActivity(b) - lastActivity(a) || a.name.localeCompare(b.name));
  }

  /**
   * Opens the newest message of the most recent conversations (MAX_PREVIEWS of them; one
   * ListMessages call of one message and one decryption each, only when a conversation has a newer
   * message than its preview) as the conversation would open it: verified, in its conversation,
   * replays flagged; but not observed in the sender's chain (see openMessage). Neither
   * acknowledged nor marked read. One refresh at a time, beside the queue of
   * live messages (which it does not hold back).
   */
  private refreshPreviews(): Promise<void> {
    const run = this.previewing.then(async () => {
      for (const c of this.sortedConversations().slice(0, MAX_PREVIEWS)) {
        if (this.stopped) return;
        if (c.lastSequence === 0 || c.previewSequence === c.lastSequence) continue;
        const sequence = c.lastSequence;
        let preview: Preview;
        try {
          const response = await this.tokens.call((o) =>
            this.api.chat.listMessages(
              { conversationId: c.conversationId, direction: Direction.BACKWARD, fromSequence: 0n, pageSize: 1 },
              o,
            ),
          );
          const newest = response.messages[0];
          // The server lists only what was encrypted for this device.
          preview = newest ? previewOf(await this.openIn(c.conversationId, newest, false)) : { shown: false };
        } catch {
          continue; // listed again at the next refresh
        }
        // A live message may have replaced the preview meanwhile.
        if ((c.previewSequence ?? 0) >= sequence) continue;
        c.preview = preview;
        c.previewSequence = sequence;
        this.listeners.conversations?.();
      }
    });
    this.previewing = run.catch(() => undefined);
    return this.previewing;
  }

  /** A message shown here (sent or received) is the conversation's newest activity. */
  private noteNewest(message: ShownMessage): void {
    const conversation = this.conversations.get(message.conversationId);
    if (!conversation || message.sequence < (conversation.previewSequence ?? 0)) return;
    conversation.lastSequence = Math.max(conversation.lastSequence, message.sequence);
    if (!conversation.lastMessageAt || message.sentAt > conversation.lastMessageAt) conversation.lastMessageAt = message.sentAt;
    conversation.preview = previewOf(message);
    conversation.previewSequence = message.sequence;
  }

  private async refreshGroups(): Promise<void> {
    const listed: Group[] = [];
    let pageToken = "";
    do {
      const page = await this.tokens.call((o) => this.api.group.listMyGroups({ pageSize: 100, pageToken }, o));
      listed.push(...page.groups);
      pageToken = page.nextPageToken;
    } while (pageToken);
    // Groups deleted or left since are gone from the map too (their roles would be stale).
    this.groups.clear();
    for (const group of listed) this.groups.set(group.groupId, group);
  }

  /** Opens (creating on first use) the direct conversation with `username`. */
  async openDirect(username: string): Promise<string> {
    const user = await this.userByName(username);
    const response = await this.tokens.call((o) =>
      this.api.chat.openDirectConversation({ peerUserId: user.user!.userId }, o),
    );
    await this.refreshConversations();
    return response.conversation!.conversationId;
  }

  async createGroup(name: string, usernames: string[]): Promise<string> {
    const members = await Promise.all(usernames.map((u) => this.userByName(u)));
    const response = await this.tokens.call((o) =>
      this.api.group.createGroup({ name, memberUserIds: members.map((m) => m.user!.userId) }, o),
    );
    const groupId = response.group!.groupId;
    // The members are the ones asked for: any other the server lists later is reported.
    const pinned: Record<string, string> = { [this.userId]: this.username };
    for (const member of members) pinned[member.user!.userId] = member.user!.username;
    this.groupPins[groupId] = { name, members: pinned };
    await store.put(store.keys.groups(this.userId), this.groupPins);
    await this.refreshConversations();
    return groupId;
  }

  async addMember(groupId: string, username: string): Promise<void> {
    const user = await this.userByName(username);
    await this.tokens.call((o) => this.api.group.addMembers({ groupId, userIds: [user.user!.userId] }, o));
    await this.noteMembers(groupId, (members) => (members[user.user!.userId] = user.user!.username));
  }

  async removeMember(groupId: string, userId: string): Promise<void> {
    await this.tokens.call((o) => this.api.group.removeMember({ groupId, userId }, o));
    await this.noteMembers(groupId, (members) => delete members[userId]);
  }

  async leaveGroup(groupId: string): Promise<void> {
    await this.tokens.call((o) => this.api.group.leaveGroup({ groupId }, o));
    await this.forgetGroup(groupId);
  }

  /** Deletes the group and its conversation, for every member (the owner only). */
  async deleteGroup(groupId: string): Promise<void> {
    await this.tokens.call((o) => this.api.group.deleteGroup({ groupId }, o));
    await this.forgetGroup(groupId);
  }

  async renameGroup(groupId: string, name: string): Promise<void> {
    const response = await this.tokens.call((o) => this.api.group.renameGroup({ groupId, name: name.trim() }, o));
    const group = response.group!;
    this.groups.set(groupId, group);
    const pin = this.groupPins[groupId];
    if (pin) {
      pin.name = group.name;
      await store.put(store.keys.groups(this.userId), this.groupPins);
    }
    const conversation = this.conversations.get(groupId);
    if (conversation) conversation.name = `# ${group.name}`;
    this.tagGroups();
    this.listeners.conversations?.();
  }

  async changeRole(groupId: string, userId: string, role: Role): Promise<void> {
    const response = await this.tokens.call((o) => this.api.group.changeMemberRole({ groupId, userId, role }, o));
    if (response.group) this.groups.set(groupId, response.group);
    this.roles.get(groupId)?.set(userId, role);
  }

  /** The group as last listed (its name, the user's role, its member count). */
  groupOf(groupId: string): Group | undefined {
    return this.groups.get(groupId);
  }

  /** A member's role as last listed (the user's own by default). */
  roleIn(groupId: string, userId = this.userId): Role {
    return this.roles.get(groupId)?.get(userId) ?? (userId === this.userId ? this.groups.get(groupId)?.myRole : undefined) ?? Role.MEMBER;
  }

  private async forgetGroup(groupId: string): Promise<void> {
    delete this.groupPins[groupId];
    await store.put(store.keys.groups(this.userId), this.groupPins);
    delete this.sealing.groups[groupId];
    this.sealing.conversations = this.sealing.conversations.filter((c) => c.groupId !== groupId);
    await this.saveSealing();
    this.groups.delete(groupId);
    this.roles.delete(groupId);
    this.conversations.delete(groupId);
    this.tagGroups();
    this.listeners.conversations?.();
  }

  /** A group's members with their devices, reviewing their keys and the membership. */
  async groupMembers(groupId: string): Promise<UserWithDevices[]> {
    const response = await this.tokens.call((o) => this.api.group.listMembers({ groupId }, o));
    const users = response.members.map((m) => ({ user: m.user, devices: m.devices }) as UserWithDevices);
    this.roles.set(groupId, new Map(response.members.map((m) => [m.user!.userId, m.role])));
    this.memberIds.set(groupId, new Set(users.map((u) => u.user!.userId)));
    await this.reviewMembers(groupId, users);
    for (const user of users) await this.remember(user);
    this.sealing.groups[groupId] = users.map((u) => u.user!.userId);
    await this.saveSealing();
    return users;
  }

  /** A group's member ids as last listed: in this page, else before a reload (IndexedDB). */
  private lastMemberIds(groupId: string): string[] {
    return [...(this.memberIds.get(groupId) ?? this.sealing.groups[groupId] ?? [])];
  }

  /**
   * A group's members with their devices as last listed and looked up (here, else as kept in
   * IndexedDB), if all are known.
   */
  private cachedMembers(groupId: string): UserWithDevices[] | undefined {
    return this.cachedUsers(this.lastMemberIds(groupId));
  }

  /**
   * Users with their devices as last looked up, here or (after a reload) as kept in IndexedDB;
   * undefined when one is unknown. This user is known at least with this device.
   */
  private cachedUsers(userIds: string[]): UserWithDevices[] | undefined {
    if (userIds.length === 0) return undefined;
    const users = userIds.map((id) => {
      const stored = this.sealing.users[id] ?? (id === this.userId ? { username: this.username, devices: [] } : undefined);
      return this.users.get(id) ?? (stored && userOf(id, stored));
    });
    return users.every((u) => u) ? (users as UserWithDevices[]) : undefined;
  }

  /** Records a membership change made here, so that it is not reported back. */
  private async noteMembers(groupId: string, change: (members: Record<string, string>) => void): Promise<void> {
    const pin = this.groupPins[groupId];
    if (!pin) return;
    change(pin.members);
    await store.put(store.keys.groups(this.userId), this.groupPins);
  }

  /** Compares a group's members with the ones last shown, and reports a change. */
  private async reviewMembers(groupId: string, users: UserWithDevices[]): Promise<void> {
    const current: Record<string, string> = {};
    for (const user of users) current[user.user!.userId] = user.user!.username;
    const name = this.groups.get(groupId)?.name ?? this.conversations.get(groupId)?.name.replace(/^# /, "") ?? "group";
    const pin = this.groupPins[groupId];
    const added = Object.keys(current).filter((id) => !pin?.members[id] && id !== this.userId);
    const removed = pin ? Object.keys(pin.members).filter((id) => !current[id]) : [];
    if (pin && added.length === 0 && removed.length === 0) return;
    this.groupPins[groupId] = { name, members: current };
    await store.put(store.keys.groups(this.userId), this.groupPins);
    const names = (ids: string[], from: Record<string, string>) => ids.map((id) => from[id]).join(", ") || "none";
    const text = pin
      ? `⚠ The members of # ${name} changed. Added: ${names(added, current)}. Removed: ${names(removed, pin.members)}. What you send now reaches every member.`
      : `This group is new to this device. Its other members: ${names(added, current)}.`;
    this.notify({ kind: "members", groupId, text, blocked: false });
  }

  // ------------------------------------------------------------ the user's devices

  /** The user's active devices, oldest first, this one marked. */
  async devices(): Promise<DeviceView[]> {
    const response = await this.tokens.call((o) => this.api.auth.listDevices({}, o));
    return response.devices.map((d) => ({
      deviceId: d.deviceId,
      name: d.name,
      current: d.deviceId === this.device.deviceId,
      createdAt: d.createdAt ? timestampDate(d.createdAt) : undefined,
      lastSeenAt: d.lastSeenAt ? timestampDate(d.lastSeenAt) : undefined,
    }));
  }

  /** Renames one of the user's devices (this one included); the server trims and checks the name. */
  async renameDevice(deviceId: string, name: string): Promise<DeviceView> {
    const response = await this.tokens.call((o) => this.api.auth.renameDevice({ deviceId, name }, o));
    const d = response.device!;
    return {
      deviceId: d.deviceId,
      name: d.name,
      current: d.deviceId === this.device.deviceId,
      createdAt: d.createdAt ? timestampDate(d.createdAt) : undefined,
      lastSeenAt: d.lastSeenAt ? timestampDate(d.lastSeenAt) : undefined,
    };
  }

  /** Revokes another of the user's devices (this one is revoked by logging out). */
  async revokeDevice(deviceId: string): Promise<void> {
    if (deviceId === this.device.deviceId) throw new Error("this is the device you are using: log out instead");
    await this.tokens.call((o) => this.api.auth.revokeDevice({ deviceId }, o));
  }

  // ------------------------------------------------------------ users and keys

  private async userByName(username: string): Promise<UserWithDevices> {
    const response = await this.tokens.call((o) => this.api.auth.lookupUsers({ usernames: [username] }, o));
    const user = response.users[0];
    if (!user?.user) throw new Error(`no user named ${username}`);
    await this.remember(user);
    return user;
  }

  private async usersById(userIds: string[], fresh = false): Promise<UserWithDevices[]> {
    const missing = [...new Set(userIds)].filter((id) => fresh || !this.users.has(id));
    if (missing.length) {
      const response = await this.tokens.call((o) => this.api.auth.lookupUsers({ userIds: missing }, o));
      for (const user of response.users) await this.remember(user);
    }
    return userIds.map((id) => this.users.get(id)).filter((u): u is UserWithDevices => !!u);
  }

  nameOf(userId: string): string {
    if (userId === this.userId) return this.username;
    return this.users.get(userId)?.user?.username ?? this.sealing.users[userId]?.username ?? userId.slice(0, 8);
  }

  /** Caches a user's devices and reviews their keys against the pins (one review at a time). */
  private remember(user: UserWithDevices): Promise<void> {
    const next = this.reviewing.then(() => this.review(user));
    this.reviewing = next.catch(() => undefined);
    return next;
  }

  /** The devices of `user` with keys, pinned as computed here; this device with its own keys. */
  private async observed(user: UserWithDevices): Promise<Map<string, { pin: Pin; spki: Uint8Array }>> {
    const now = Math.floor(Date.now() / 1000);
    const observed = new Map<string, { pin: Pin; spki: Uint8Array }>();
    const add = async (deviceId: string, spki: Uint8Array, signingKey: Uint8Array) => {
      const pin: Pin = {
        encryption: e2ee.hex(await e2ee.sha256(spki)),
        signing: e2ee.hex(await e2ee.sha256(signingKey)),
        signingKey: e2ee.hex(signingKey),
        firstSeenAt: now,
      };
      observed.set(deviceId, { pin, spki });
    };
    for (const device of user.devices) {
      if (device.keys) await add(device.deviceId, device.keys.encryptionPublicKey, device.keys.signingPublicKey);
    }
    if (user.user?.userId === this.userId) {
      await add(this.device.deviceId, this.device.keys.encryptionSpki, this.device.keys.signingPublic);
    }
    return observed;
  }

  private async review(user: UserWithDevices): Promise<void> {
    const userId = user.user?.userId;
    if (!userId) return;
    this.users.set(userId, user);
    const username = user.user?.username ?? userId;
    await this.keepForSealing(userId, username, user);
    const observed = await this.observed(user);
    const known = this.contacts[userId];
    if (!known) {
      const keys: Record<string, Pin> = {};
      for (const [deviceId, { pin }] of observed) keys[deviceId] = pin;
      this.contacts[userId] = { username, keys, pending: {}, verified: false };
      await this.saveContacts();
      return;
    }
    const before = JSON.stringify(known);
    const pins = new Map([...observed].map(([deviceId, { pin }]) => [deviceId, pin]));
    const { changes, blocked } = trust.review(known, pins, Math.floor(Date.now() / 1000));
    known.username = username;
    if (JSON.stringify(known) !== before) await this.saveContacts();
    if (changes.length === 0) return;
    const what = `${[...new Set(changes)].join(", ")}${known.verified ? " (they were verified)" : ""}`;
    this.listeners.keyWarning?.({ userId, username, what, blocked });
    const mine = userId === this.userId;
    const text = mine
      ? `⚠ Your account's devices changed: ${what}. If that was not you, change your password.`
      : `⚠ ${username}'s keys changed: ${what}.`;
    this.notify({
      kind: "keys",
      userId,
      text: blocked ? `${text} Nothing is sent to ${mine ? "you" : username} until you accept the new keys.` : `${text} Compare safety numbers.`,
      blocked,
    });
  }

  /** Keeps a user's devices as listed, for sealing after a reload without the server. */
  private async keepForSealing(userId: string, username: string, user: UserWithDevices): Promise<void> {
    const kept: StoredUser = {
      username,
      devices: user.devices
        .filter((d) => d.keys)
        .map((d) => ({
          deviceId: d.deviceId,
          encryption: e2ee.hex(d.keys!.encryptionPublicKey),
          signing: e2ee.hex(d.keys!.signingPublicKey),
        })),
    };
    if (JSON.stringify(this.sealing.users[userId]) === JSON.stringify(kept)) return;
    this.sealing.users[userId] = kept;
    await this.saveSealing();
  }

  private saveContacts(): Promise<void> {
    return store.put(store.keys.contacts(this.userId), this.contacts);
  }

  private notify(notice: Notice): void {
    this.notices.push(notice);
    this.listeners.notice?.(notice);
  }

  /** Whether `notice` concerns the conversation. */
  concerns(notice: Notice, conversationId: string): boolean {
    const conversation = this.conversations.get(conversationId);
    if (!conversation) return false;
    if (notice.kind === "members") return notice.groupId === conversation.groupId;
    if (notice.userId === this.userId) return true;
    if (conversation.kind === "direct") return notice.userId === conversation.peerUserId;
    return this.lastMemberIds(conversation.groupId).includes(notice.userId ?? "");
  }

  /** The notices of this session that concern a conversation, oldest first. */
  noticesFor(conversationId: string): Notice[] {
    return this.notices.filter((notice) => this.concerns(notice, conversationId));
  }

  /** Participants of a conversation whose keys changed and are not accepted yet. */
  pendingIn(conversationId: string): string[] {
    const conversation = this.conversations.get(conversationId);
    if (!conversation) return [];
    const ids = conversation.kind === "direct" ? [this.userId, conversation.peerUserId] : this.lastMemberIds(conversation.groupId);
    return ids.filter((id) => Object.keys(this.contacts[id]?.pending ?? {}).length > 0);
  }

  isVerified(userId: string): boolean {
    const contact = this.contacts[userId];
    return !!contact?.verified && Object.keys(contact.pending).length === 0;
  }

  /** Marks the user verified: exactly their current keys are trusted (pending changes included). */
  async markVerified(userId: string): Promise<void> {
    await this.accept(userId, true);
  }

  /** Accepts a user's current keys without verifying them: sending to them resumes. */
  async trust(userId: string): Promise<void> {
    await this.accept(userId, false);
    this.notify({ kind: "keys", userId, text: `You accepted the new keys of ${this.nameOf(userId)}.`, blocked: false });
  }

  private async accept(userId: string, verified: boolean): Promise<void> {
    const [user] = await this.usersById([userId], true);
    if (!user) return;
    const observed = await this.observed(user);
    const pins = new Map([...observed].map(([deviceId, { pin }]) => [deviceId, pin]));
    await (this.reviewing = this.reviewing.then(async () => {
      const contact = (this.contacts[userId] ??= { keys: {}, pending: {}, verified: false });
      trust.accept(contact, pins, verified, Math.floor(Date.now() / 1000));
      await this.saveContacts();
    }));
    // Messages held for these keys are sealed again for the devices accepted and sent.
    this.flushOutbox();
  }

  /** The safety number with `userId`, from the key bytes of both users' current devices. */
  async safetyNumber(userId: string): Promise<string> {
    const [me, them] = await this.usersById([this.userId, userId], true);
    const fingerprints = async (user: UserWithDevices) =>
      [...(await this.observed(user)).values()].flatMap(({ pin }) => [e2ee.unhex(pin.encryption), e2ee.unhex(pin.signing)]);
    return e2ee.safetyNumber(this.userId, await fingerprints(me), userId, await fingerprints(them));
  }

  // ------------------------------------------------------------ sending (the queue: outbox.ts)

  /**
   * Seals `text` for every device of the conversation, keeps it in the queue (IndexedDB) and
   * starts sending it: the returned message is pending until the server acknowledges it (the
   * `message` event then shows it as sent), or failed when the server refuses it for good. Without
   * the server it is sealed for the devices and members last listed (kept in IndexedDB, so also
   * after a reload). When a participant's new keys wait for the user's decision it is queued held
   * (`waitingFor`): sent once the user accepts them, or discarded. Throws only when it cannot be
   * sealed at all (recipients never listed here and no connection); then nothing is queued. The
   * device seals and sends one message at a time, in all of this browser's tabs (a Web Lock per
   * device): two at once would take one chain counter (a fork at every recipient) or reach the
   * server out of their counters' order.
   */
  async send(conversationId: string, text: string): Promise<UnsentMessage> {
    checkText(text);
    const conversation = this.conversations.get(conversationId);
    if (!conversation) throw new Error("unknown conversation");
    const entry = await navigator.locks.request(this.sendLock, async () => {
      // Another tab may have sealed since this one last read the chains and the queue.
      this.sendingChains = (await store.get(store.keys.sendingChains(this.userId))) ?? {};
      const queued = await outbox.load(this.userId, this.device.deviceId);
      const clientMessageId = crypto.randomUUID();
      const { recipients, waitingFor } = await this.recipients(conversation, false, true);
      const envelope = await this.sealNext(conversationId, clientMessageId, recipients, text);
      const entry: outbox.OutboxEntry = {
        clientMessageId,
        conversationId,
        conversation: { kind: conversation.kind, peerUserId: conversation.peerUserId, groupId: conversation.groupId, name: conversation.name },
        envelope,
        // The queue's order is the chain's: strictly after what is queued already.
        createdAt: Math.max(Date.now(), (queued.at(-1)?.createdAt ?? 0) + 1),
        state: "pending",
        mismatches: 0,
        waitingFor: waitingFor.length > 0 ? waitingFor : undefined,
      };
      await outbox.save(this.userId, this.device.deviceId, entry);
      return entry;
    });
    const message = this.unsentView(entry, text);
    this.unsentMessages.set(entry.clientMessageId, message);
    this.listeners.unsent?.(conversationId);
    this.flushOutbox();
    return message;
  }

  /** The messages of a conversation not acknowledged yet (pending or failed), oldest first. */
  unsent(conversationId: string): UnsentMessage[] {
    return [...this.unsentMessages.values()]
      .filter((m) => m.conversationId === conversationId)
      .sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime());
  }

  /**
   * Forgets a message the server refused for good, or one held until keys are accepted (never
   * sent: it leaves the chain, and the conversation's later messages are sealed again one place
   * earlier). A pending one that is not held may be stored already: kept.
   */
  async discard(clientMessageId: string): Promise<void> {
    const message = this.unsentMessages.get(clientMessageId);
    if (message?.state !== "failed" && !message?.waitingFor) return;
    const discarded = await navigator.locks.request(this.sendLock, async () => {
      const entries = await outbox.load(this.userId, this.device.deviceId);
      const entry = entries.find((e) => e.clientMessageId === clientMessageId);
      if (!entry || (entry.state !== "failed" && !outbox.held(entry))) return false;
      if (outbox.held(entry)) await this.rechain(entry, entries, false, true);
      await outbox.remove(this.userId, this.device.deviceId, entry);
      await this.noteUnsent(entries.filter((e) => e !== entry));
      return true;
    });
    if (!discarded) return;
    this.unsentMessages.delete(clientMessageId);
    this.listeners.unsent?.(message.conversationId);
  }

  /**
   * Sends what the queue holds, in order, one pass at a time. A retryable failure ends the pass
   * (the server is likely unreachable: nothing later may overtake the message in its chain), and
   * the next pass comes after a backoff with jitter, or at once when the stream reconnects or the
   * network comes back.
   */
  flushOutbox(): void {
    if (this.flushWaiting || this.stopped) return; // the pass waiting will see everything queued
    this.flushWaiting = true;
    this.flushing = this.flushing.then(async () => {
      this.flushWaiting = false;
      clearTimeout(this.retryTimer);
      if (this.stopped) return;
      let again: boolean;
      try {
        again = await navigator.locks.request(this.sendLock, () => this.flushInTurn());
      } catch (error) {
        if (error instanceof SessionEnded) return; // the stream says so to the page
        again = true;
      }
      if (!again) {
        this.retryFailures = 0;
      } else if (!this.stopped) {
        this.retryFailures++;
        this.retryTimer = setTimeout(() => this.flushOutbox(), outbox.retryDelay(this.retryFailures));
      }
    });
  }

  private get sendLock(): string {
    return `chat-send/${this.device.deviceId}`;
  }

  /**
   * One pass over the queue, in the device's turn to send; true when it must be tried again. A
   * held message whose keys are all accepted now is sealed again for the current devices and
   * sent; one still held holds back the later messages of its conversation (the chain's order).
   */
  private async flushInTurn(): Promise<boolean> {
    const entries = await outbox.load(this.userId, this.device.deviceId);
    await this.noteUnsent(entries);
    const heldBack = new Set<string>();
    for (const entry of entries) {
      if (entry.state !== "pending" || heldBack.has(entry.conversationId)) continue;
      if (outbox.held(entry) && !(await this.release(entry, entries))) {
        heldBack.add(entry.conversationId);
        continue;
      }
      if (!(await this.sendEntry(entry, entries))) return true;
      if (outbox.held(entry)) heldBack.add(entry.conversationId);
    }
    // Held or released on the way: shown as they are now (read again: the sent ones are gone).
    await this.noteUnsent(await outbox.load(this.userId, this.device.deviceId));
    return false;
  }

  /**
   * A held message once every user it waits for has no key change pending any more: sealed again
   * for the current devices (it and the conversation's later messages, at their places in the
   * chain); true when it is no longer held. It stays held when a key still waits (a new change
   * found on the way too), and when the devices cannot be listed now (tried again at the next pass).
   */
  private async release(entry: outbox.OutboxEntry, entries: outbox.OutboxEntry[]): Promise<boolean> {
    const waiting = (entry.waitingFor ?? []).some((id) => Object.keys(this.contacts[id]?.pending ?? {}).length > 0);
    if (waiting) return false;
    try {
      await this.rechain(entry, entries, true);
    } catch (error) {
      if (error instanceof SessionEnded) throw error;
      return false;
    }
    return !outbox.held(entry);
  }

  /** Sends one queued message (the same envelope as any earlier attempt); false: retry later. */
  private async sendEntry(entry: outbox.OutboxEntry, entries: outbox.OutboxEntry[]): Promise<boolean> {
    for (;;) {
      let failure: unknown;
      try {
        const sent = await this.tokens.call((o) => this.api.chat.sendMessage({ envelope: entry.envelope }, o));
        await outbox.remove(this.userId, this.device.deviceId, entry);
        this.onSent(entry, await this.textOf(entry), sent);
        return true;
      } catch (error) {
        if (error instanceof SessionEnded) throw error;
        failure = error;
      }
      const mismatch = ConnectError.from(failure).code === Code.FailedPrecondition;
      if (!mismatch && outbox.retryable(failure)) return false;
      try {
        if (mismatch && entry.mismatches < outbox.MAX_MISMATCHES) {
          // The device lists changed: sealed again for the current devices, at the same place
          // in the chain (the server stored nothing under this id), and so is what follows it.
          entry.mismatches++;
          await this.rechain(entry, entries, true);
          // A participant's new keys wait to be accepted: held until they are.
          if (outbox.held(entry)) return true;
          continue;
        }
        // Refused for good: out of the chain, so that the next message does not name it.
        await this.rechain(entry, entries, false);
      } catch (error) {
        if (error instanceof SessionEnded) throw error;
        if (outbox.retryable(error)) return false;
      }
      entry.state = "failed";
      // The server sees only the padded ciphertext: its limit is the one people meet as length.
      entry.error = /ciphertext must have/.test(errorMessage(failure)) ? "the message is too long" : errorMessage(failure);
      await outbox.save(this.userId, this.device.deviceId, entry);
      this.unsentMessages.set(entry.clientMessageId, this.unsentView(entry, await this.textOf(entry)));
      this.listeners.unsent?.(entry.conversationId);
      return true;
    }
  }

  /**
   * Rebuilds this device's chain in the conversation from `entry`'s place: `entry` sealed again
   * there (`keep`, after a device-list mismatch) or left out (refused for good), then every later
   * pending message of the conversation after it, with the same client message ids (none of them
   * was sent: the queue sends a conversation's messages in order). Recipients then see an
   * unbroken chain. Everything is sealed before anything is written. Those sealed while a
   * participant's new keys wait are held (`waitingFor`). With `offline`, the devices and members
   * last listed do when the server cannot be asked (a held message discarded without it).
   */
  private async rechain(entry: outbox.OutboxEntry, entries: outbox.OutboxEntry[], keep: boolean, offline = false): Promise<void> {
    const conversationId = entry.conversationId;
    const later = entries
      .slice(entries.indexOf(entry) + 1)
      .filter((e) => e.conversationId === conversationId && e.state === "pending");
    const resealing = keep ? [entry, ...later] : later;
    let counter = entry.envelope.senderCounter;
    let previous = entry.envelope.previousEnvelopeHash;
    const envelopes: e2ee.EnvelopeFields[] = [];
    let waitingFor: string[] = [];
    if (resealing.length > 0) {
      const sealing = await this.recipients(await this.conversationOf(entry), true, offline);
      const recipients = sealing.recipients;
      waitingFor = sealing.waitingFor;
      for (const next of resealing) {
        const position = { counter, previousEnvelopeHash: previous, senderTimeMs: BigInt(Date.now()) };
        const text = e2ee.utf8(await this.textOf(next));
        const envelope = await e2ee.seal(this.sender, conversationId, next.clientMessageId, recipients, position, text);
        envelopes.push(envelope);
        previous = (await e2ee.sealedLink(envelope)).envelopeHash;
        counter++;
      }
    }
    for (const [i, next] of resealing.entries()) {
      next.envelope = envelopes[i];
      next.waitingFor = waitingFor.length > 0 ? waitingFor : undefined;
      await outbox.save(this.userId, this.device.deviceId, next);
    }
    this.sendingChains = (await store.get(store.keys.sendingChains(this.userId))) ?? {};
    this.sendingChains[conversationId] = {
      counter: (counter - 1n).toString(),
      lastHash: e2ee.hex(previous),
      // Nothing to reseal in place any more (sealNext's reseal is for the message just sealed).
      lastClientMessageId: "",
      previousOfLast: "",
    };
    await store.put(store.keys.sendingChains(this.userId), this.sendingChains);
  }

  /** The conversation of a queued message: listed, else listed again (it may be new here). */
  private async conversationOf(entry: outbox.OutboxEntry): Promise<ConversationView> {
    if (!this.listedIn.has(entry.conversationId)) await this.refreshConversations().catch(() => undefined);
    const conversation = this.conversations.get(entry.conversationId);
    if (!conversation) throw new Error("this conversation is no longer available to you");
    return conversation;
  }

  /** A queued message acknowledged: out of the queue, shown as sent. */
  private onSent(entry: outbox.OutboxEntry, text: string, sent: { messageId: string; sequence: bigint; sentAt?: { seconds: bigint; nanos: number } }): void {
    this.unsentMessages.delete(entry.clientMessageId);
    // Shown at once; the stream delivers the same message id later, which is deduplicated.
    const shown: ShownMessage = {
      messageId: sent.messageId,
      conversationId: entry.conversationId,
      sequence: Number(sent.sequence),
      sentAt: sent.sentAt ? timestampDate(sent.sentAt) : new Date(),
      senderUserId: this.userId,
      senderName: this.username,
      senderDeviceId: this.device.deviceId,
      clientMessageId: entry.clientMessageId,
      mine: true,
      text,
      chainWarnings: [],
    };
    this.noteNewest(shown);
    this.listeners.unsent?.(entry.conversationId);
    this.listeners.message?.(shown, true);
    this.listeners.conversations?.();
  }

  /**
   * Brings the messages shown as unsent in line with the queue (other tabs of this device send
   * from it and write to it too), opening the text of those not known here from their envelopes.
   */
  private async noteUnsent(entries: outbox.OutboxEntry[]): Promise<void> {
    const changed = new Set<string>();
    const queued = new Set(entries.map((e) => e.clientMessageId));
    for (const [id, message] of this.unsentMessages) {
      if (queued.has(id)) continue;
      this.unsentMessages.delete(id);
      changed.add(message.conversationId);
    }
    for (const entry of entries) {
      const known = this.unsentMessages.get(entry.clientMessageId);
      if (known?.state === entry.state && !!known.waitingFor === outbox.held(entry)) continue;
      let text: string;
      try {
        text = await this.textOf(entry);
      } catch {
        continue; // not this device's envelope: never sent, never shown
      }
      this.unsentMessages.set(entry.clientMessageId, this.unsentView(entry, text));
      changed.add(entry.conversationId);
    }
    for (const conversationId of changed) this.listeners.unsent?.(conversationId);
  }

  /** A queued message as shown, with the names of the users whose keys it waits for. */
  private unsentView(entry: outbox.OutboxEntry, text: string): UnsentMessage {
    return unsentOf(entry, text, outbox.held(entry) ? entry.waitingFor!.map((id) => this.nameOf(id)) : undefined);
  }

  /** A message this device sent came back (the stream, a history page): it is no longer unsent. */
  private settleUnsent(shown: ShownMessage): void {
    if (shown.senderDeviceId !== this.device.deviceId || !this.unsentMessages.has(shown.clientMessageId)) return;
    this.unsentMessages.delete(shown.clientMessageId);
    this.listeners.unsent?.(shown.conversationId);
  }

  /** The text of a queued message: known here, else opened from its envelope (never stored as text). */
  private async textOf(entry: outbox.OutboxEntry): Promise<string> {
    const known = this.unsentMessages.get(entry.clientMessageId);
    if (known) return known.text;
    return new TextDecoder("utf-8", { fatal: true }).decode(await e2ee.openOwn(entry.envelope, this.sender));
  }

  private get sender(): e2ee.Sender {
    return { userId: this.userId, deviceId: this.device.deviceId, keys: this.device.keys };
  }

  /**
   * Seals `text` as suite V2 at this device's next position in the conversation's chain, and
   * records it in IndexedDB. Called only in the device's turn to send (see send).
   */
  private async sealNext(
    conversationId: string,
    clientMessageId: string,
    recipients: e2ee.RecipientDevice[],
    text: string,
  ): Promise<e2ee.EnvelopeFields> {
    const chain = this.sendingChains[conversationId];
    const counter = chain === undefined ? 1n : BigInt(chain.counter) + 1n;
    const previousHash = chain === undefined ? "" : chain.lastHash;
    const position = {
      counter,
      previousEnvelopeHash: previousHash ? e2ee.unhex(previousHash) : new Uint8Array(32),
      senderTimeMs: BigInt(Date.now()),
    };
    const envelope = await e2ee.seal(this.sender, conversationId, clientMessageId, recipients, position, e2ee.utf8(text));
    const link = await e2ee.sealedLink(envelope);
    this.sendingChains[conversationId] = {
      counter: counter.toString(),
      lastHash: e2ee.hex(link.envelopeHash),
      lastClientMessageId: clientMessageId,
      previousOfLast: e2ee.hex(position.previousEnvelopeHash),
    };
    await store.put(store.keys.sendingChains(this.userId), this.sendingChains);
    return envelope;
  }

  /**
   * The devices to seal for: every trusted device of every participant, and the users (ids) with
   * a device that is not trusted (keys waiting for the user's decision: nothing is sealed for
   * that device, and the message is held). Changes found on the way are reported (notices) before
   * this returns, so before anything is sealed for them. With `offline`, participants that cannot
   * be listed now (a retryable failure) are the ones last listed, here or before a reload (a
   * group's members and every user's devices, kept in IndexedDB): a stale list is refused with a
   * device-list mismatch, which reseals for the current one.
   */
  private async recipients(
    conversation: ConversationView,
    fresh: boolean,
    offline = false,
  ): Promise<{ recipients: e2ee.RecipientDevice[]; waitingFor: string[] }> {
    const lastListed = (ids: () => string[]) => (error: unknown) => {
      const unreachable = offline && !(error instanceof SessionEnded) && outbox.retryable(error);
      const cached = unreachable ? this.cachedUsers(ids()) : undefined;
      if (!cached) throw error;
      return cached;
    };
    const users =
      conversation.kind === "group"
        ? await this.groupMembers(conversation.groupId).catch(lastListed(() => this.lastMemberIds(conversation.groupId)))
        : await this.usersById([this.userId, conversation.peerUserId], fresh).catch(
            lastListed(() => [this.userId, conversation.peerUserId]),
          );
    await this.reviewing;
    const recipients: e2ee.RecipientDevice[] = [];
    const waitingFor = new Set<string>();
    for (const user of users) {
      const userId = user.user!.userId;
      const contact = this.contacts[userId];
      for (const [deviceId, { pin, spki }] of await this.observed(user)) {
        const mine = userId === this.userId && deviceId === this.device.deviceId;
        if (mine || trust.trusted(contact, deviceId, pin)) recipients.push({ deviceId, encryptionSpki: spki });
        else waitingFor.add(userId);
      }
    }
    return { recipients, waitingFor: [...waitingFor] };
  }

  async typing(conversationId: string): Promise<void> {
    try {
      await this.tokens.call((o) => this.api.chat.sendTyping({ conversationId }, o));
    } catch {
      // Rate limited or offline: typing indicators are best effort.
    }
  }

  async markRead(conversationId: string, sequence: number): Promise<void> {
    const conversation = this.conversations.get(conversationId);
    if (conversation) conversation.unread = 0;
    this.listeners.conversations?.();
    if (sequence <= 0) return;
    await this.tokens.call((o) =>
      this.api.chat.acknowledge(
        { ack: { conversationId, deliveredSequence: BigInt(sequence), readSequence: BigInt(sequence) } },
        o,
      ),
    );
  }

  // ------------------------------------------------------------ receiving

  /** One page of history before `beforeSequence` (0: the newest), oldest first. */
  async history(conversationId: string, beforeSequence: number): Promise<{ messages: ShownMessage[]; more: boolean }> {
    const response = await this.tokens.call((o) =>
      this.api.chat.listMessages(
        {
          conversationId,
          direction: Direction.BACKWARD,
          fromSequence: BigInt(beforeSequence),
          pageSize: HISTORY_PAGE,
        },
        o,
      ),
    );
    // Acknowledge receipt before any RSA work (RUSTSEC-2023-0071: nothing the server sees may
    // depend on how long a decryption takes); reading is acknowledged by the page later.
    const newest = response.messages[0];
    if (newest && beforeSequence === 0) {
      void this.tokens
        .call((o) =>
          this.api.chat.acknowledge({ ack: { conversationId, deliveredSequence: newest.sequence, readSequence: 0n } }, o),
        )
        .catch(() => undefined);
    }
    const messages: ShownMessage[] = [];
    for (const message of [...response.messages].reverse()) {
      const shown = await this.openIn(conversationId, message);
      this.settleUnsent(shown);
      messages.push(shown);
    }
    return { messages, more: response.nextFromSequence > 0n };
  }

  /**
   * Opens a message shown in a conversation: it must belong to it (and, in a direct conversation,
   * come from one of its two users); a verified one is recorded in the conversation's seen log,
   * which flags a replay (the same envelope under another sequence), across reloads too.
   */
  private async openIn(conversationId: string, message: Message, observeChain = true): Promise<ShownMessage> {
    const shown = await this.openMessage(message, observeChain);
    const conversation = this.conversations.get(conversationId);
    const misplaced =
      message.conversationId !== conversationId ||
      (conversation?.kind === "direct" && shown.senderUserId !== this.userId && shown.senderUserId !== conversation.peerUserId);
    if (misplaced) shown.text = undefined;
    if (shown.text === undefined) return shown;
    const log = await this.seenLog(conversationId);
    const key = `${shown.senderDeviceId}/${shown.clientMessageId}`;
    const known = key in log;
    const first = trust.recordSeen(log, key, shown.sequence, store.SEEN_CAPACITY);
    if (first !== undefined) {
      shown.text = undefined;
      shown.replayOf = first;
    } else if (!known) {
      await store.put(store.keys.seen(this.userId, conversationId), log);
    }
    return shown;
  }

  private async seenLog(conversationId: string): Promise<SeenLog> {
    let log = this.seenLogs.get(conversationId);
    if (!log) {
      log = (await store.get<SeenLog>(store.keys.seen(this.userId, conversationId))) ?? {};
      this.seenLogs.set(conversationId, log);
    }
    return log;
  }

  /**
   * Verifies and decrypts a delivered message; one that fails any check gets no text. It does not
   * check which conversation the message is shown in, nor whether it was shown before (openIn does).
   * A preview does not observe the sender's chain (`observeChain` false): the newest message seen
   * alone, out of order, would start a run of sequences there and hide a gap before it from the
   * conversation's view, which observes it in order.
   */
  async openMessage(message: Message, observeChain = true): Promise<ShownMessage> {
    const envelope = message.envelope!;
    const shown: ShownMessage = {
      messageId: message.messageId,
      conversationId: message.conversationId,
      sequence: Number(message.sequence),
      sentAt: message.sentAt ? timestampDate(message.sentAt) : new Date(0),
      senderUserId: envelope.senderUserId,
      senderName: "",
      senderDeviceId: envelope.senderDeviceId,
      clientMessageId: envelope.clientMessageId,
      mine: envelope.senderUserId === this.userId,
      text: undefined,
      chainWarnings: [],
    };
    // Failures are budgeted per sending device (V2: only it chooses its wrapped keys) and
    // together for V1, whose wrapped keys the server can replace.
    // A key forwarded by another device of the user (forwarding.ts) is budgeted per forwarder.
    const viaForwarded = !forwarding.hasOwnKey(message, this.device.deviceId) && message.forwardedKeys.length > 0;
    const budgetKey = viaForwarded
      ? `forwarder:${message.forwardedKeys[0]!.forwarderDeviceId}`
      : envelope.suite === e2ee.SUITE_V1
        ? "v1"
        : envelope.senderDeviceId;
    try {
      if (envelope.conversationId !== message.conversationId) throw new Error("delivered in another conversation");
      if (!(await this.mayDecrypt(budgetKey))) {
        shown.notAttempted = true;
        throw new Error("too many failures from this sender");
      }
      const sentAt = Number(message.sentAt?.seconds ?? 0n);
      const signingKey = await this.signingKey(envelope.senderUserId, envelope.senderDeviceId, sentAt);
      let opened;
      try {
        opened = viaForwarded
          ? await this.openForwarded(message, signingKey)
          : await e2ee.open(
              envelope,
              message.recipientsDigest,
              message.recipientCount,
              this.device.deviceId,
              this.device.keys,
              signingKey,
            );
      } catch (error) {
        const kind = error instanceof e2ee.E2eeError ? error.kind : "";
        if (["UnwrapFailed", "KeyCommitmentMismatch", "DecryptFailed", "BadPadding"].includes(kind)) {
          await this.recordFailure(budgetKey);
        }
        throw error;
      }
      shown.text = new TextDecoder("utf-8", { fatal: true }).decode(opened.plaintext);
      if (opened.link && observeChain) {
        const chains = (this.receivedChains[message.conversationId] ??= e2ee.newConversationChains());
        const serverTimeMs = Number(message.sentAt?.seconds ?? 0n) * 1000 + Math.floor((message.sentAt?.nanos ?? 0) / 1e6);
        const anomalies = e2ee.observeChain(chains, Number(message.sequence), envelope.senderDeviceId, opened.link, serverTimeMs);
        shown.chainWarnings = anomalies.map(e2ee.describeAnomaly);
        void store.put(store.keys.receivedChains(this.userId), this.receivedChains);
      }
    } catch {
      // Never say which check failed (see the e2ee crate's threat model).
      shown.text = undefined;
    }
    shown.senderName = this.nameOf(envelope.senderUserId);
    return shown;
  }

  /**
   * Whether messages from `sender` may still be decrypted. The budget is kept in IndexedDB and
   * read each time, so that it holds across reloads and tabs.
   */
  private async mayDecrypt(sender: string): Promise<boolean> {
    const failures = (await store.get<DecryptionFailures>(store.keys.decryptionFailures(this.userId))) ?? {};
    const entry = failures[sender];
    return !entry || entry.count < MAX_FAILURES_PER_SENDER || Date.now() - entry.since >= FAILURE_WINDOW_MS;
  }

  private async recordFailure(sender: string): Promise<void> {
    const key = store.keys.decryptionFailures(this.userId);
    const failures = (await store.get<DecryptionFailures>(key)) ?? {};
    for (const [other, entry] of Object.entries(failures)) {
      if (Date.now() - entry.since >= FAILURE_WINDOW_MS) delete failures[other];
    }
    const entry = (failures[sender] ??= { count: 0, since: Date.now() });
    entry.count++;
    await store.put(key, failures);
  }

  /**
   * The pinned Ed25519 key of a sender's device, after its owner's current devices were reviewed
   * (from the cache, then fresh once when the device is not pinned). Refused for a device revoked
   * before `sentAt` (the server's stamp, in Unix seconds), or whose keys are not accepted.
   */
  /**
   * Opens a message with a key another device of this user forwarded (forwarding.ts): only one
   * from a device of this user whose key this page pins, not revoked when the key was stored.
   */
  private openForwarded(message: Message, senderSigningKey: Uint8Array): Promise<e2ee.Opened> {
    return this.withForwardedKey(message, (key, forwarderKey) =>
      forwarding.openForwarded(message, key, this.device.deviceId, this.device.keys, senderSigningKey, forwarderKey),
    );
  }

  /**
   * Forwards to `target` the key of a message this device was itself forwarded: the key is used
   * as for opening (the same forwarders trusted, every check made, decryption included, failures
   * counted in the forwarder's budget), then wrapped for `target` and signed by this device.
   */
  private async reforward(message: Message, senderSigningKey: Uint8Array, target: e2ee.RecipientDevice) {
    const budgetKey = `forwarder:${message.forwardedKeys[0]?.forwarderDeviceId ?? ""}`;
    if (!(await this.mayDecrypt(budgetKey))) throw new Error("too many failures from this forwarder");
    try {
      return await this.withForwardedKey(message, (key, forwarderKey) =>
        forwarding.reforwardKey(message, key, this.userId, this.device.deviceId, this.device.keys, senderSigningKey, forwarderKey, target),
      );
    } catch (error) {
      const kind = error instanceof e2ee.E2eeError ? error.kind : "";
      if (["UnwrapFailed", "KeyCommitmentMismatch", "DecryptFailed", "BadPadding"].includes(kind)) await this.recordFailure(budgetKey);
      throw error;
    }
  }

  /**
   * Calls `use` with each key forwarded with `message` by another device of this user whose key
   * this page pins (not revoked when the key was stored), until one succeeds; the last error else.
   */
  private async withForwardedKey<T>(
    message: Message,
    use: (key: Message["forwardedKeys"][number], forwarderKey: Uint8Array) => Promise<T>,
  ): Promise<T> {
    let last: unknown = new Error("no key forwarded by a trusted device of yours");
    for (const key of message.forwardedKeys) {
      if (key.forwarderUserId !== this.userId || key.forwarderDeviceId === this.device.deviceId) continue;
      try {
        const at = Number(key.forwardedAt?.seconds ?? 0n);
        const forwarderKey = await this.signingKey(this.userId, key.forwarderDeviceId, at);
        return await use(key, forwarderKey);
      } catch (error) {
        last = error;
      }
    }
    throw last;
  }

  private async signingKey(userId: string, deviceId: string, sentAt: number): Promise<Uint8Array> {
    if (userId === this.userId && deviceId === this.device.deviceId) return this.device.keys.signingPublic;
    for (const fresh of [false, true]) {
      await this.usersById([userId], fresh);
      await this.reviewing;
      const key = trust.senderKey(this.contacts[userId], deviceId, sentAt);
      if (key) return e2ee.unhex(key);
    }
    throw new Error("the sender's device is unknown");
  }

  private setState(state: ConnectionState, detail = ""): void {
    this.state = state;
    this.listeners.connection?.(state, detail);
  }

  /** Subscribes from the cursors; after any end or error reconnects with backoff and resumes. */
  private async runStream(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      await this.untilNetwork();
      if (this.stopped) return;
      this.setState("connecting");
      const controller = new AbortController();
      this.stream = controller;
      let watchdog = setTimeout(() => controller.abort(), HEARTBEAT_TIMEOUT_MS);
      let refreshed = false;
      let received = false;
      try {
        const positions = Object.entries(this.cursors).map(([conversationId, sequence]) => ({
          conversationId,
          sequence: BigInt(sequence),
        }));
        const options = await this.tokens.options(controller.signal);
        for await (const response of this.api.chat.subscribe({ positions }, options)) {
          clearTimeout(watchdog);
          watchdog = setTimeout(() => controller.abort(), HEARTBEAT_TIMEOUT_MS);
          failures = 0;
          received = true;
          await this.onEvent(response.event);
        }
      } catch (error) {
        if (error instanceof SessionEnded) {
          this.setState("offline", "session ended");
          this.listeners.sessionEnded?.();
          return;
        }
        if (ConnectError.from(error).code === Code.Unauthenticated) {
          try {
            await this.tokens.refresh();
            refreshed = true;
          } catch (refreshError) {
            if (refreshError instanceof SessionEnded) {
              this.listeners.sessionEnded?.();
              return;
            }
          }
        }
      } finally {
        clearTimeout(watchdog);
      }
      if (this.stopped) return;
      this.reconnects++;
      if (!this.network) continue; // back when the browser has a network again, at once
      // The access token expired under a working stream: resume at once with the fresh one (a
      // stream refused from its start takes the backoff, so a bad clock cannot spin this loop).
      if (refreshed && received) continue;
      failures++;
      const delay = Math.min(MAX_BACKOFF_MS, 250 * 2 ** Math.min(failures - 1, 5)) * (0.5 + Math.random() / 2);
      this.setState("offline", `reconnecting in ${(delay / 1000).toFixed(1)} s`);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  private async onEvent(event: StreamEvent | undefined): Promise<void> {
    const e = event?.event;
    switch (e?.case) {
      case "message":
        await this.onMessage(e.value);
        break;
      case "caughtUp": {
        // Online once what came before is shown, unless this stream ended meanwhile.
        const stream = this.stream;
        this.afterOpening(() => {
          if (this.stream === stream && !this.stopped && this.network) this.setState("online");
        });
        // Conversations started (or unread counts changed) while this page was offline.
        void this.refreshConversations().catch(() => undefined);
        // The server is reachable again: what waits in the queue goes now, not after its backoff.
        this.retryFailures = 0;
        this.flushOutbox();
        break;
      }
      case "receipt":
        if (e.value.userId !== this.userId) {
          this.listeners.receipt?.(e.value.conversationId, e.value.userId, Number(e.value.readSequence));
        }
        break;
      case "typing":
        if (e.value.userId !== this.userId) this.listeners.typing?.(e.value.conversationId, e.value.userId);
        break;
      case "keysForwarded": {
        const conversationId = e.value.conversationId;
        // The preview may be a message this page could not read: opened again.
        const conversation = this.conversations.get(conversationId);
        if (conversation) conversation.previewSequence = undefined;
        void this.refreshPreviews();
        this.afterOpening(() => this.listeners.keysForwarded?.(conversationId));
        break;
      }
      case "membershipChange":
      case "devicesChanged":
        // Reviewed now, so that a change is shown before the next message is sealed for it.
        if (e.case === "devicesChanged") await this.usersById([e.value.userId], true).catch(() => undefined);
        if (e.case === "devicesChanged" && e.value.userId === this.userId) void this.forwardKeys().catch(() => undefined);
        if (e.case === "membershipChange" && this.groupPins[e.value.groupId]) {
          await this.groupMembers(e.value.groupId).catch(() => undefined);
        }
        await this.refreshConversations().catch(() => undefined);
        if (e.case === "membershipChange") this.listeners.groupChanged?.(e.value.groupId);
        break;
      default:
        break;
    }
  }

  private async onMessage(message: Message): Promise<void> {
    const sequence = Number(message.sequence);
    const conversationId = message.conversationId;
    if (this.seenMessages.has(message.messageId) || sequence <= (this.cursors[conversationId] ?? 0)) return;
    this.seenMessages.add(message.messageId);
    // Acknowledge on receipt, and open in the queue: the stream goes on reading (and
    // acknowledging) while messages are opened, so no acknowledgement waits for RSA work (as the
    // Rust client: nothing the server sees may depend on how long a decryption takes).
    this.cursors[conversationId] = sequence;
    void store.put(store.keys.cursors(this.userId), this.cursors);
    void this.tokens
      .call((o) =>
        this.api.chat.acknowledge({ ack: { conversationId, deliveredSequence: message.sequence, readSequence: 0n } }, o),
      )
      .catch(() => undefined);
    this.afterOpening(() => this.showReceived(message));
  }

  /** Runs `step` once every message received before it is opened and shown (in order). */
  private afterOpening(step: () => Promise<void> | void): void {
    this.opening = this.opening.then(step).catch(() => undefined);
  }

  private async showReceived(message: Message): Promise<void> {
    const sequence = Number(message.sequence);
    const conversationId = message.conversationId;
    if (!this.conversations.has(conversationId)) await this.refreshConversations();
    const shown = await this.openIn(conversationId, message);
    this.settleUnsent(shown);
    const conversation = this.conversations.get(conversationId);
    // Messages up to the listed last sequence are already in the listed unread count.
    if (conversation && sequence > conversation.lastSequence && !shown.mine) conversation.unread++;
    this.noteNewest(shown);
    this.listeners.message?.(shown, true);
    this.listeners.conversations?.();
  }
}

/** A user as kept for sealing (store.ts `StoredUser`), in the API's shape. */
function userOf(userId: string, stored: StoredUser): UserWithDevices {
  return create(UserWithDevicesSchema, {
    user: { userId, username: stored.username },
    devices: stored.devices.map((d) => ({
      deviceId: d.deviceId,
      keys: { encryptionPublicKey: e2ee.unhex(d.encryption), signingPublicKey: e2ee.unhex(d.signing) },
    })),
  });
}

function unsentOf(entry: outbox.OutboxEntry, text: string, names?: string[]): UnsentMessage {
  return {
    clientMessageId: entry.clientMessageId,
    conversationId: entry.conversationId,
    text,
    createdAt: new Date(entry.createdAt),
    state: entry.state,
    error: entry.error,
    waitingFor: names && names.length > 0 ? names : undefined,
  };
}

/** A server's refusal in words (its status message, without the code). */
function errorMessage(error: unknown): string {
  if (error instanceof ConnectError) return error.rawMessage || error.message;
  return error instanceof Error ? error.message : String(error);
}

function timestampDate(t: { seconds: bigint; nanos: number }): Date {
  return new Date(Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6));
}
