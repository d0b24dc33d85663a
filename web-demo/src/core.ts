// The client logic, without any DOM: login (device keys generated here and uploaded), sending
// (sealed for every device, one retry after a device-list mismatch), opening delivered messages
// (verified, never shown when a check fails), the live stream (Subscribe from per-conversation
// cursors, reconnecting with backoff and resuming), history pages, acknowledgements, receipts,
// typing, groups, key pinning and safety numbers. The same behaviour as the Rust client
// (client/src), which it interoperates with.

import { Code, ConnectError } from "@connectrpc/connect";

import { Api, SessionEnded, Tokens, sessionFrom } from "./api";
import * as e2ee from "./e2ee";
import type { Device, User, UserWithDevices } from "./gen/auth/v1/auth_pb";
import {
  ConversationKind,
  Direction,
  type Conversation,
  type Message,
  type StreamEvent,
} from "./gen/chat/v1/chat_pb";
import type { Group } from "./gen/group/v1/group_pb";
import * as store from "./store";
import type { Contact, DeviceRecord } from "./store";

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
  /** The text, or undefined when the message failed verification. */
  text: string | undefined;
  /** What is wrong with the sender device's chain at this message (suite V2), in words. */
  chainWarnings: string[];
}

/** This device's chain in one conversation (suite V2), kept in IndexedDB. */
interface SendingChain {
  counter: string; // a bigint, as text
  lastHash: string;
  lastClientMessageId: string;
  previousOfLast: string;
}

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
}

export interface KeyWarning {
  userId: string;
  username: string;
  what: string;
}

/** What the core tells the UI. */
export interface CoreEvents {
  connection(state: ConnectionState, detail: string): void;
  conversations(): void;
  message(message: ShownMessage, live: boolean): void;
  receipt(conversationId: string, userId: string, readSequence: number): void;
  typing(conversationId: string, userId: string): void;
  keyWarning(warning: KeyWarning): void;
  sessionEnded(): void;
}

const HISTORY_PAGE = 30;
const HEARTBEAT_TIMEOUT_MS = 40_000;
const MAX_BACKOFF_MS = 5_000;

export async function register(api: Api, username: string, password: string): Promise<void> {
  await api.auth.register({ username, password, displayName: username });
}

/**
 * Logs in as `username`: resumes this browser's device of that user when there is one (its keys
 * stay in IndexedDB), otherwise creates a device, generates its keys and uploads the public halves.
 */
export async function login(api: Api, username: string, password: string, rsaBits = 3072): Promise<Core> {
  const existing = await store.get<DeviceRecord>(store.keys.device(username));
  const request = { username, password, deviceId: existing?.deviceId ?? "", deviceName: browserName() };
  let response;
  let keys = existing?.keys;
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
  if (!keys || device.deviceId !== existing?.deviceId) keys = await e2ee.generateDeviceKeys(rsaBits);
  const published = device.keys?.encryptionPublicKey;
  if (!published || !e2ee.equalBytes(published, keys.encryptionSpki)) {
    await tokens.call((options) =>
      api.auth.uploadDeviceKeys(
        { keys: { encryptionPublicKey: keys.encryptionSpki, signingPublicKey: keys.signingPublic } },
        options,
      ),
    );
  }
  const record: DeviceRecord = { username: user.username, userId: user.userId, deviceId: device.deviceId, keys };
  await store.put(store.keys.device(user.username), record);
  await store.put(store.keys.session, session);
  return new Core(api, tokens, record);
}

/** The saved session, if any (a page reload resumes it without a password). */
export async function resume(api: Api): Promise<Core | undefined> {
  const session = await store.get<store.SessionRecord>(store.keys.session);
  if (!session) return undefined;
  const device = await store.get<DeviceRecord>(store.keys.device(session.username));
  if (!device) return undefined;
  return new Core(api, new Tokens(api, session), device);
}

/** Forgets the saved session (the device and its keys stay). */
export async function forgetSession(): Promise<void> {
  await store.remove(store.keys.session);
}

function browserName(): string {
  const agent = typeof navigator === "undefined" ? "" : navigator.userAgent;
  const browser = /Chrom(e|ium)/.test(agent) ? "Chromium" : /Firefox/.test(agent) ? "Firefox" : "a browser";
  return `web demo on ${browser}`;
}

export class Core {
  readonly conversations = new Map<string, ConversationView>();
  private readonly users = new Map<string, UserWithDevices>();
  private readonly groups = new Map<string, Group>();
  private readonly seenMessages = new Set<string>();
  private readonly seenClientIds = new Set<string>();
  private cursors: Record<string, number> = {};
  private contacts: Record<string, Contact> = {};
  private sendingChains: Record<string, SendingChain> = {};
  private receivedChains: Record<string, e2ee.ConversationChains> = {};
  /** Seals of one conversation one after the other: each names the previous one's hash. */
  private sealing = new Map<string, Promise<unknown>>();
  private failures = new Map<string, { count: number; since: number }>();
  private stream: AbortController | undefined;
  private stopped = false;
  listeners: Partial<CoreEvents> = {};
  state: ConnectionState = "offline";
  /** How many times the stream was opened again after an end or error. */
  reconnects = 0;

  constructor(
    readonly api: Api,
    readonly tokens: Tokens,
    readonly device: DeviceRecord,
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
    this.contacts = (await store.get(store.keys.contacts(this.userId))) ?? {};
    this.sendingChains = (await store.get(store.keys.sendingChains(this.userId))) ?? {};
    this.receivedChains = (await store.get(store.keys.receivedChains(this.userId))) ?? {};
    try {
      await this.refreshConversations();
    } catch (error) {
      // Offline at start: the stream keeps trying and lists the conversations once it connects.
      if (error instanceof SessionEnded) throw error;
    }
    void this.runStream();
  }

  stop(): void {
    this.stopped = true;
    this.stream?.abort();
  }

  async logout(): Promise<void> {
    this.stop();
    try {
      await this.tokens.call((options) => this.api.auth.logout({}, options));
    } catch {
      // An ended session is logged out already; the local session goes either way.
    }
    await store.remove(store.keys.session);
  }

  // ------------------------------------------------------------ conversations

  async refreshConversations(): Promise<void> {
    const listed: Conversation[] = [];
    let pageToken = "";
    do {
      const page = await this.tokens.call((o) => this.api.chat.listConversations({ pageSize: 100, pageToken }, o));
      listed.push(...page.conversations);
      pageToken = page.nextPageToken;
    } while (pageToken);
    if (listed.some((c) => c.groupId)) await this.refreshGroups();
    await this.usersById(listed.map((c) => c.peerUserId).filter((id) => id));
    for (const c of listed) {
      const previous = this.conversations.get(c.conversationId);
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
      });
    }
    this.listeners.conversations?.();
  }

  sortedConversations(): ConversationView[] {
    return [...this.conversations.values()].sort((a, b) => b.lastSequence - a.lastSequence || a.name.localeCompare(b.name));
  }

  private async refreshGroups(): Promise<void> {
    let pageToken = "";
    do {
      const page = await this.tokens.call((o) => this.api.group.listMyGroups({ pageSize: 100, pageToken }, o));
      for (const group of page.groups) this.groups.set(group.groupId, group);
      pageToken = page.nextPageToken;
    } while (pageToken);
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
    await this.refreshConversations();
    return response.group!.groupId;
  }

  async addMember(groupId: string, username: string): Promise<void> {
    const user = await this.userByName(username);
    await this.tokens.call((o) => this.api.group.addMembers({ groupId, userIds: [user.user!.userId] }, o));
  }

  async removeMember(groupId: string, userId: string): Promise<void> {
    await this.tokens.call((o) => this.api.group.removeMember({ groupId, userId }, o));
  }

  async leaveGroup(groupId: string): Promise<void> {
    await this.tokens.call((o) => this.api.group.leaveGroup({ groupId }, o));
    this.conversations.delete(groupId);
    this.listeners.conversations?.();
  }

  async groupMembers(groupId: string): Promise<UserWithDevices[]> {
    const response = await this.tokens.call((o) => this.api.group.listMembers({ groupId }, o));
    const users = response.members.map((m) => ({ user: m.user, devices: m.devices }) as UserWithDevices);
    for (const user of users) this.remember(user);
    return users;
  }

  // ------------------------------------------------------------ users and keys

  private async userByName(username: string): Promise<UserWithDevices> {
    const response = await this.tokens.call((o) => this.api.auth.lookupUsers({ usernames: [username] }, o));
    const user = response.users[0];
    if (!user?.user) throw new Error(`no user named ${username}`);
    this.remember(user);
    return user;
  }

  private async usersById(userIds: string[], fresh = false): Promise<UserWithDevices[]> {
    const missing = [...new Set(userIds)].filter((id) => fresh || !this.users.has(id));
    if (missing.length) {
      const response = await this.tokens.call((o) => this.api.auth.lookupUsers({ userIds: missing }, o));
      for (const user of response.users) this.remember(user);
    }
    return userIds.map((id) => this.users.get(id)).filter((u): u is UserWithDevices => !!u);
  }

  nameOf(userId: string): string {
    if (userId === this.userId) return this.username;
    return this.users.get(userId)?.user?.username ?? userId.slice(0, 8);
  }

  /** Caches a user's devices and pins their keys on first use; warns when they change. */
  private remember(user: UserWithDevices): void {
    const userId = user.user?.userId;
    if (!userId) return;
    this.users.set(userId, user);
    const current: store.Pins = {};
    for (const device of user.devices) {
      if (!device.keys) continue;
      current[device.deviceId] = {
        encryption: e2ee.hex(device.encryptionKeyFingerprint),
        signing: e2ee.hex(device.signingKeyFingerprint),
      };
    }
    const known = this.contacts[userId];
    if (!known) {
      this.contacts[userId] = { pins: current, verified: false };
      void store.put(store.keys.contacts(this.userId), this.contacts);
      return;
    }
    const changes: string[] = [];
    for (const [deviceId, pin] of Object.entries(current)) {
      const old = known.pins[deviceId];
      if (!old) changes.push("a new device was added");
      else if (old.encryption !== pin.encryption || old.signing !== pin.signing) changes.push("a device's keys changed");
    }
    for (const deviceId of Object.keys(known.pins)) {
      if (!current[deviceId]) changes.push("a device was removed");
    }
    if (changes.length === 0) return;
    const wasVerified = known.verified;
    this.contacts[userId] = { pins: current, verified: false };
    void store.put(store.keys.contacts(this.userId), this.contacts);
    this.listeners.keyWarning?.({
      userId,
      username: user.user?.username ?? userId,
      what: `${[...new Set(changes)].join(", ")}${wasVerified ? " (it was verified: verify again)" : ""}`,
    });
  }

  isVerified(userId: string): boolean {
    return this.contacts[userId]?.verified ?? false;
  }

  async markVerified(userId: string): Promise<void> {
    const contact = this.contacts[userId];
    if (!contact) return;
    contact.verified = true;
    await store.put(store.keys.contacts(this.userId), this.contacts);
  }

  /** The safety number with `userId`, from both users' current devices. */
  async safetyNumber(userId: string): Promise<string> {
    const [me, them] = await this.usersById([this.userId, userId], true);
    const fingerprints = (devices: Device[]) =>
      devices.filter((d) => d.keys).flatMap((d) => [d.encryptionKeyFingerprint, d.signingKeyFingerprint]);
    return e2ee.safetyNumber(this.userId, fingerprints(me.devices), userId, fingerprints(them.devices));
  }

  // ------------------------------------------------------------ sending

  /** Seals `text` for every device of the conversation and sends it (one retry after a mismatch). */
  async send(conversationId: string, text: string): Promise<ShownMessage> {
    const conversation = this.conversations.get(conversationId);
    if (!conversation) throw new Error("unknown conversation");
    const clientMessageId = crypto.randomUUID();
    for (let fresh = false; ; fresh = true) {
      const envelope = await this.sealNext(conversationId, clientMessageId, await this.recipients(conversation, fresh), text);
      try {
        const sent = await this.tokens.call((o) => this.api.chat.sendMessage({ envelope }, o));
        // Shown at once; the stream delivers the same message id later, which is deduplicated.
        return {
          messageId: sent.messageId,
          conversationId,
          sequence: Number(sent.sequence),
          sentAt: new Date(Number(sent.sentAt?.seconds ?? 0n) * 1000),
          senderUserId: this.userId,
          senderName: this.username,
          senderDeviceId: this.device.deviceId,
          clientMessageId,
          mine: true,
          text,
          chainWarnings: [],
        };
      } catch (error) {
        if (fresh || ConnectError.from(error).code !== Code.FailedPrecondition) throw error;
      }
    }
  }

  /**
   * Seals `text` as suite V2 at this device's next position in the conversation's chain (the same
   * position again for a reseal of the same message), and records it in IndexedDB.
   */
  private async sealNext(
    conversationId: string,
    clientMessageId: string,
    recipients: e2ee.RecipientDevice[],
    text: string,
  ): Promise<Awaited<ReturnType<typeof e2ee.seal>>> {
    const previous = this.sealing.get(conversationId) ?? Promise.resolve();
    const sealed = previous.catch(() => undefined).then(async () => {
      const chain = this.sendingChains[conversationId];
      const reseal = chain !== undefined && chain.lastClientMessageId === clientMessageId;
      const counter = chain === undefined ? 1n : reseal ? BigInt(chain.counter) : BigInt(chain.counter) + 1n;
      const previousHash = chain === undefined ? "" : reseal ? chain.previousOfLast : chain.lastHash;
      const position = {
        counter,
        previousEnvelopeHash: previousHash ? e2ee.unhex(previousHash) : new Uint8Array(32),
        senderTimeMs: BigInt(Date.now()),
      };
      const envelope = await e2ee.seal(
        { userId: this.userId, deviceId: this.device.deviceId, keys: this.device.keys },
        conversationId,
        clientMessageId,
        recipients,
        position,
        e2ee.utf8(text),
      );
      const link = await e2ee.sealedLink(envelope);
      this.sendingChains[conversationId] = {
        counter: counter.toString(),
        lastHash: e2ee.hex(link.envelopeHash),
        lastClientMessageId: clientMessageId,
        previousOfLast: e2ee.hex(position.previousEnvelopeHash),
      };
      await store.put(store.keys.sendingChains(this.userId), this.sendingChains);
      return envelope;
    });
    this.sealing.set(conversationId, sealed);
    return sealed;
  }

  private async recipients(conversation: ConversationView, fresh: boolean): Promise<e2ee.RecipientDevice[]> {
    const users =
      conversation.kind === "group"
        ? await this.groupMembers(conversation.groupId)
        : await this.usersById([this.userId, conversation.peerUserId], fresh);
    return users.flatMap((u) =>
      u.devices.filter((d) => d.keys).map((d) => ({ deviceId: d.deviceId, encryptionSpki: d.keys!.encryptionPublicKey })),
    );
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
    for (const message of [...response.messages].reverse()) messages.push(await this.openMessage(message));
    return { messages, more: response.nextFromSequence > 0n };
  }

  /** Verifies and decrypts a delivered message; one that fails any check gets no text. */
  async openMessage(message: Message): Promise<ShownMessage> {
    const envelope = message.envelope!;
    const shown: ShownMessage = {
      messageId: message.messageId,
      conversationId: message.conversationId,
      sequence: Number(message.sequence),
      sentAt: new Date(Number(message.sentAt?.seconds ?? 0n) * 1000),
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
    const budgetKey = envelope.suite === e2ee.SUITE_V1 ? "v1" : envelope.senderDeviceId;
    try {
      if (envelope.conversationId !== message.conversationId) throw new Error("delivered in another conversation");
      if (!this.mayDecrypt(budgetKey)) throw new Error("too many failures from this sender");
      const signingKey = await this.signingKey(envelope.senderUserId, envelope.senderDeviceId);
      let opened;
      try {
        opened = await e2ee.open(
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
          this.recordFailure(budgetKey);
        }
        throw error;
      }
      shown.text = new TextDecoder("utf-8", { fatal: true }).decode(opened.plaintext);
      if (opened.link) {
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

  private mayDecrypt(sender: string): boolean {
    const entry = this.failures.get(sender);
    return !entry || entry.count < MAX_FAILURES_PER_SENDER || Date.now() - entry.since >= FAILURE_WINDOW_MS;
  }

  private recordFailure(sender: string): void {
    const entry = this.failures.get(sender);
    if (!entry || Date.now() - entry.since >= FAILURE_WINDOW_MS) this.failures.set(sender, { count: 1, since: Date.now() });
    else entry.count++;
  }

  private async signingKey(userId: string, deviceId: string): Promise<Uint8Array> {
    if (userId === this.userId && deviceId === this.device.deviceId) return this.device.keys.signingPublic;
    for (const fresh of [false, true]) {
      const [user] = await this.usersById([userId], fresh);
      const device = user?.devices.find((d) => d.deviceId === deviceId);
      if (device?.keys) return device.keys.signingPublicKey;
    }
    throw new Error("the sender's device is unknown");
  }

  /** Whether a verified message was shown before under the same sender device and client id. */
  isReplay(message: ShownMessage): boolean {
    if (message.text === undefined) return false;
    const key = `${message.senderDeviceId}/${message.clientMessageId}`;
    if (this.seenClientIds.has(key)) return true;
    this.seenClientIds.add(key);
    return false;
  }

  private setState(state: ConnectionState, detail = ""): void {
    this.state = state;
    this.listeners.connection?.(state, detail);
  }

  /** Subscribes from the cursors; after any end or error reconnects with backoff and resumes. */
  private async runStream(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
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
      case "caughtUp":
        this.setState("online");
        // Conversations started (or unread counts changed) while this page was offline.
        void this.refreshConversations().catch(() => undefined);
        break;
      case "receipt":
        if (e.value.userId !== this.userId) {
          this.listeners.receipt?.(e.value.conversationId, e.value.userId, Number(e.value.readSequence));
        }
        break;
      case "typing":
        if (e.value.userId !== this.userId) this.listeners.typing?.(e.value.conversationId, e.value.userId);
        break;
      case "membershipChange":
      case "devicesChanged":
        if (e.case === "devicesChanged") await this.usersById([e.value.userId], true).catch(() => undefined);
        await this.refreshConversations().catch(() => undefined);
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
    // Acknowledge on receipt, before decrypting (as the Rust client does: no timing oracle).
    this.cursors[conversationId] = sequence;
    void store.put(store.keys.cursors(this.userId), this.cursors);
    void this.tokens
      .call((o) =>
        this.api.chat.acknowledge({ ack: { conversationId, deliveredSequence: message.sequence, readSequence: 0n } }, o),
      )
      .catch(() => undefined);
    if (!this.conversations.has(conversationId)) await this.refreshConversations();
    const shown = await this.openMessage(message);
    const conversation = this.conversations.get(conversationId);
    // Messages up to the listed last sequence are already in the listed unread count.
    if (conversation && sequence > conversation.lastSequence) {
      conversation.lastSequence = sequence;
      if (!shown.mine) conversation.unread++;
    }
    if (!this.isReplay(shown)) this.listeners.message?.(shown, true);
    this.listeners.conversations?.();
  }
}

export type { User };
