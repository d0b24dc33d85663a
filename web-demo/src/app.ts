// The page: login/register (optionally keeping the device, optionally sealing its keys under a
// passphrase) and unlocking, the conversation list with unread counts, one conversation at a time
// (history on scroll, live messages, receipts, typing, safety numbers, notices of key and
// membership changes, accepting new keys, a verified mark), groups (manage.ts: roles and what
// they allow) and the devices screen. Each panel shows its own errors in its own status line.
// All logic lives in core.ts; this file only renders and wires.

import { Api, SessionEnded } from "./api";
import {
  Core,
  LockedDevice,
  forgetSession,
  login,
  register,
  resume,
  type ConnectionState,
  type Notice,
  type ShownMessage,
  type UnsentMessage,
  unreadableRuns,
  unreadableText,
} from "./core";
import { $, errorText, say } from "./dom";
import { showDevices, showMembers } from "./manage";

const api = new Api(location.origin);
let core: Core | undefined;

// The open conversation and what is shown of it.
let currentId: string | undefined;
let shown = new Map<string, ShownMessage>(); // by message id
let oldestShown = 0;
let moreHistory = false;
let loadingHistory = false;
let historyFailed = false; // the open conversation's history could not be loaded: again once online
let readBy = new Map<string, number>(); // other users' read positions in the open conversation
const typingTimers = new Map<string, ReturnType<typeof setTimeout>>();
let lastTypingSent = 0;

// ---------------------------------------------------------------- auth

async function boot(): Promise<void> {
  const resumed = await resume(api).catch(() => undefined);
  if (!resumed) return showAuth();
  if (resumed instanceof LockedDevice) return showUnlock(resumed);
  try {
    await enter(resumed);
  } catch (error) {
    resumed.stop();
    core = undefined;
    if (error instanceof SessionEnded) await forgetSession();
    if (error instanceof SessionEnded) showAuth("Your session ended: log in again.");
    else showAuth(errorText(error), "error");
  }
}

function showAuth(message = "", kind: "error" | "info" = "info"): void {
  // Nothing of the previous session stays on the page (and no stale element can be clicked).
  currentId = undefined;
  $("conversations").replaceChildren();
  $("messages").replaceChildren();
  delete $("messages").dataset.conversationId;
  $("title").textContent = "";
  $("typing").textContent = "";
  $("conversation").hidden = true;
  $("devices-view").hidden = true;
  $("empty").hidden = false;
  $("app").dataset.view = "list";
  $("app").hidden = true;
  $("unlock").hidden = true;
  $("auth").hidden = false;
  for (const line of ["sidebar-status", "conversation-status", "devices-status"]) say(line, "");
  say("auth-status", message, kind);
  document.body.dataset.screen = "auth";
  $("username").focus();
}

async function authenticate(create: boolean): Promise<void> {
  const username = $<HTMLInputElement>("username").value.trim();
  const password = $<HTMLInputElement>("password").value;
  const passphrase = $<HTMLInputElement>("device-passphrase").value;
  const keep = $<HTMLInputElement>("keep-device").checked;
  const status = $("auth-status");
  if (!$<HTMLFormElement>("auth-form").reportValidity()) return;
  say(status, create ? "Creating your account…" : "Logging in…");
  for (const id of ["login", "register"]) $<HTMLButtonElement>(id).disabled = true;
  try {
    if (create) await register(api, username, password);
    say(status, "Generating this device's keys…");
    await enter(await login(api, username, password, { keep, passphrase: passphrase || undefined }));
    $<HTMLInputElement>("device-passphrase").value = "";
  } catch (error) {
    say(status, errorText(error), "error");
  } finally {
    for (const id of ["login", "register"]) $<HTMLButtonElement>(id).disabled = false;
  }
}

async function enter(session: Core): Promise<void> {
  core = session;
  core.listeners = {
    connection: showConnection,
    conversations: () => {
      renderConversations();
      // The conversation's last sequence may have moved: messages up to it not shown here are
      // explained.
      renderUnreadable();
    },
    message: onLiveMessage,
    receipt: onReceipt,
    typing: onTyping,
    notice: onNotice,
    unsent: (conversationId) => {
      if (conversationId === currentId) renderUnsent();
    },
    removed: onRemoved,
    keysForwarded: (conversationId) => void reloadReadable(conversationId),
    groupChanged: (groupId) => {
      const panel = $("panel");
      if (core && !panel.hidden && panel.dataset.groupId === groupId) void showMembers(core, groupId, membersHost);
    },
    sessionEnded: () => {
      core?.stop();
      core = undefined;
      void forgetSession();
      showAuth("Your session ended: log in again.");
    },
  };
  $("auth").hidden = true;
  $("unlock").hidden = true;
  $("app").hidden = false;
  $("app").dataset.view = "list";
  $("me").textContent = session.username;
  document.body.dataset.screen = "app";
  document.body.dataset.user = session.username;
  document.body.dataset.device = session.device.deviceId;
  await session.start();
  // The open conversation is in the URL's fragment, so a reload comes back to it.
  const fromUrl = new URLSearchParams(location.hash.slice(1)).get("c");
  if (fromUrl && session.conversations.has(fromUrl)) await openConversation(fromUrl);
}

function showConnection(state: ConnectionState, detail: string): void {
  // Counters for the tests (and the curious): stream reconnections and token refreshes.
  document.body.dataset.reconnects = String(core?.reconnects ?? 0);
  document.body.dataset.refreshes = String(core?.tokens.refreshes ?? 0);
  const conn = $("conn");
  conn.dataset.state = state;
  conn.textContent = state === "online" ? "online" : state === "connecting" ? "connecting…" : `offline${detail ? `, ${detail}` : ""}`;
  if (state === "online" && historyFailed) void loadOlder();
}

// ---------------------------------------------------------------- conversation list

function renderConversations(): void {
  if (!core) return;
  const list = $("conversations");
  list.replaceChildren(
    ...core.sortedConversations().map((c) => {
      const item = document.createElement("li");
      item.tabIndex = 0;
      item.dataset.conversationId = c.conversationId;
      item.dataset.name = c.name;
      item.setAttribute("role", "button");
      item.setAttribute("aria-current", String(c.conversationId === currentId));
      const top = document.createElement("div");
      top.className = "top";
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = c.name;
      top.append(name);
      if (c.lastMessageAt) {
        const time = document.createElement("time");
        time.dateTime = c.lastMessageAt.toISOString();
        time.textContent = listTime(c.lastMessageAt);
        top.append(time);
      }
      const bottom = document.createElement("div");
      bottom.className = "bottom";
      const preview = document.createElement("span");
      preview.className = "preview";
      if (c.preview?.shown) {
        preview.dataset.status = "verified";
        preview.textContent = `${c.preview.flagged ? "⚠ " : ""}${c.preview.from}: ${c.preview.text}`;
      } else if (c.preview) {
        // Never the text of a message this device could not verify.
        preview.dataset.status = "not-shown";
        preview.textContent = "(a message this device cannot show)";
      } else {
        preview.textContent = c.lastSequence === 0 ? "no messages yet" : "";
      }
      if (c.tag) {
        const tag = document.createElement("span");
        tag.className = "tag muted";
        tag.textContent = c.tag;
        bottom.append(tag);
      }
      bottom.append(preview);
      if (c.unread > 0 && c.conversationId !== currentId) {
        const badge = document.createElement("span");
        badge.className = "unread";
        badge.textContent = String(c.unread);
        badge.setAttribute("aria-label", `${c.unread} unread`);
        bottom.append(badge);
      }
      item.append(top, bottom);
      item.onclick = () => void openConversation(c.conversationId);
      item.onkeydown = (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          void openConversation(c.conversationId);
        }
      };
      return item;
    }),
  );
  if (currentId) {
    const c = core.conversations.get(currentId);
    if (c) {
      $("title").textContent = c.name;
      $("title-tag").textContent = c.tag ?? "";
    }
  }
}

/** The verified mark in the header of a direct conversation: shown while the contact is
 * verified (safety numbers compared) and no key change of theirs waits for a decision. */
function updateVerifiedMark(): void {
  const conversation = core && currentId ? core.conversations.get(currentId) : undefined;
  $("verified-mark").hidden = !(conversation?.kind === "direct" && core!.isVerified(conversation.peerUserId));
}

/** A conversation is gone (a group deleted, or the user removed from it): close it if open. */
function onRemoved(conversationId: string): void {
  if (conversationId !== currentId) return;
  const name = $("title").textContent ?? "the conversation";
  closeConversation();
  say("sidebar-status", `${name} is no longer available to you: deleted, or you are no longer a member.`);
}

function closeConversation(): void {
  currentId = undefined;
  history.replaceState(null, "", "#");
  $("conversation").hidden = true;
  $("panel").hidden = true;
  $("empty").hidden = false;
  $("app").dataset.view = "list";
  renderConversations();
}

const membersHost = {
  closed(message: string) {
    closeConversation();
    say("sidebar-status", message);
  },
};

/** The time of a conversation's newest message: the time of day today, else the date. */
function listTime(at: Date): string {
  const today = new Date().toDateString() === at.toDateString();
  return today
    ? at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : at.toLocaleDateString([], { day: "numeric", month: "short" });
}

async function openConversation(conversationId: string): Promise<void> {
  if (!core) return;
  const conversation = core.conversations.get(conversationId);
  if (!conversation) return;
  currentId = conversationId;
  history.replaceState(null, "", `#c=${conversationId}`);
  shown = new Map();
  readBy = new Map();
  oldestShown = 0;
  moreHistory = true;
  $("empty").hidden = true;
  $("devices-view").hidden = true;
  $("conversation").hidden = false;
  $("app").dataset.view = "conversation";
  $("title").textContent = conversation.name;
  $("title-tag").textContent = conversation.tag ?? "";
  say("conversation-status", "");
  updateVerifiedMark();
  $("messages").replaceChildren();
  $("messages").dataset.conversationId = conversationId;
  historyFailed = false;
  renderUnsent();
  $("typing").textContent = "";
  $("panel").hidden = true;
  delete $("panel").dataset.groupId;
  $("members").hidden = conversation.kind !== "group";
  $("safety").hidden = conversation.kind !== "direct";
  $("key-warning").hidden = true;
  renderConversations();
  await loadOlder();
  if (conversationId !== currentId) return;
  for (const notice of core.noticesFor(conversationId)) addNotice(notice);
  updateKeyBanner();
  const messages = $("messages");
  messages.scrollTop = messages.scrollHeight;
  await markRead();
  $("text").focus();
}

async function markRead(): Promise<void> {
  if (!core || !currentId) return;
  const newest = Math.max(0, ...[...shown.values()].map((m) => m.sequence));
  await core.markRead(currentId, newest).catch(() => undefined);
}

// ---------------------------------------------------------------- messages

async function loadOlder(): Promise<void> {
  if (!core || !currentId || loadingHistory || !moreHistory) return;
  loadingHistory = true;
  const conversationId = currentId;
  const list = $("messages");
  const heightBefore = list.scrollHeight;
  try {
    const page = await core.history(conversationId, oldestShown);
    if (conversationId !== currentId) return;
    moreHistory = page.more;
    if (historyFailed) say("conversation-status", "");
    historyFailed = false;
    for (const message of page.messages) addMessage(message);
    renderUnreadable();
    list.scrollTop += list.scrollHeight - heightBefore;
    list.dataset.historyComplete = String(!moreHistory);
  } catch (error) {
    historyFailed = true;
    say("conversation-status", `History not loaded: ${errorText(error)}`, "error");
  } finally {
    loadingHistory = false;
  }
}

/**
 * Keys of earlier messages were forwarded to this page: the open conversation's history is listed
 * again, from the newest message down to the oldest shown (to its start when the history was
 * complete), and what became readable takes the place of its explanation, without a reload.
 */
async function reloadReadable(conversationId: string): Promise<void> {
  if (!core || conversationId !== currentId) return;
  const oldest = oldestShown;
  // History not loaded yet stays for loadOlder; a complete one is listed to its start again.
  const complete = !moreHistory;
  let before = 0;
  try {
    for (;;) {
      const page = await core.history(conversationId, before);
      if (conversationId !== currentId) return;
      for (const message of page.messages) addMessage(message);
      const pageOldest = page.messages[0]?.sequence;
      if (!page.more || pageOldest === undefined) {
        moreHistory = false;
        break;
      }
      if (!complete && pageOldest <= oldest) break;
      before = pageOldest;
    }
  } catch {
    return; // shown at the next opening of the conversation, as before the event existed
  }
  $("messages").dataset.historyComplete = String(!moreHistory);
  renderUnreadable();
}

function addMessage(message: ShownMessage): void {
  if (shown.has(message.messageId)) return;
  shown.set(message.messageId, message);
  oldestShown = oldestShown === 0 ? message.sequence : Math.min(oldestShown, message.sequence);
  const item = document.createElement("li");
  item.className = "message";
  item.dataset.seq = String(message.sequence);
  item.dataset.messageId = message.messageId;
  item.dataset.mine = String(message.mine);
  item.dataset.status =
    message.replayOf !== undefined ? "replay" : message.notAttempted ? "not-attempted" : message.text === undefined ? "failed" : "verified";
  const from = document.createElement("div");
  from.className = "from";
  from.textContent = message.mine ? "you" : message.senderName;
  const body = document.createElement("div");
  body.className = "body";
  body.textContent =
    message.text ??
    (message.replayOf !== undefined
      ? `⚠ The server sent message ${message.replayOf} again (a replay): not shown again.`
      : message.notAttempted
        ? "⚠ Too many messages from this sender's device failed to decrypt: not decrypted."
        : "⚠ This message failed verification and is not shown.");
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = message.sentAt.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  item.append(from, body, meta);
  // Suite V2 chain checks: drops, forks, reorders and implausible times, shown on the message.
  if (message.chainWarnings.length) {
    const warning = document.createElement("div");
    warning.className = "chain-warning";
    warning.textContent = `⚠ ${message.chainWarnings.join("; ")}`;
    item.append(warning);
  }
  // Keep the list in sequence order whatever order pages and live messages arrive in.
  const list = $("messages");
  const after = [...list.children].find((child) => Number((child as HTMLElement).dataset.seq) > message.sequence);
  list.insertBefore(item, after ?? null);
  updateReceipts();
}

/**
 * The messages of the open conversation this device cannot read (not encrypted for it), as notices
 * in their place, in the CLI's words: the gaps between the messages shown, before the oldest once
 * the history reached the start, after the newest up to the conversation's last sequence. Drawn
 * again from what is shown each time, so a message that arrives late replaces its gap.
 */
function renderUnreadable(): void {
  if (!core || !currentId) return;
  const list = $("messages");
  for (const item of list.querySelectorAll(".unreadable")) item.remove();
  const sequences = [...shown.values()].map((m) => m.sequence);
  const lastSequence = core.conversations.get(currentId)?.lastSequence;
  for (const run of unreadableRuns(sequences, !moreHistory, lastSequence)) {
    const item = document.createElement("li");
    item.className = "notice unreadable";
    item.dataset.kind = "unreadable";
    item.dataset.seq = String(run.firstSequence);
    item.dataset.count = String(run.count);
    item.dataset.beforeThisDevice = String(run.beforeThisDevice);
    item.setAttribute("role", "status");
    item.textContent = unreadableText(run);
    const after = [...list.children].find((child) => Number((child as HTMLElement).dataset.seq) > run.firstSequence);
    list.insertBefore(item, after ?? null);
  }
}

/**
 * The messages of the open conversation not acknowledged yet, after every message shown: "pending"
 * while they are retried, "not sent" with the server's reason and "Discard" when refused for good.
 */
function renderUnsent(): void {
  if (!core || !currentId) return;
  const list = $("messages");
  for (const item of list.querySelectorAll(".message.unsent")) item.remove();
  for (const message of core.unsent(currentId)) list.append(unsentItem(message));
  list.scrollTop = list.scrollHeight;
}

function unsentItem(message: UnsentMessage): HTMLElement {
  const item = document.createElement("li");
  item.className = "message unsent";
  item.dataset.seq = "Infinity"; // after every message the server numbered
  item.dataset.mine = "true";
  item.dataset.status = message.state === "pending" ? "pending" : "not-sent";
  item.dataset.clientMessageId = message.clientMessageId;
  const from = document.createElement("div");
  from.className = "from";
  from.textContent = "you";
  const body = document.createElement("div");
  body.className = "body";
  body.textContent = message.text;
  const meta = document.createElement("div");
  meta.className = "meta";
  const time = message.createdAt.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  meta.textContent = message.state === "pending" ? `${time} · pending, sent when the server is reachable` : time;
  item.append(from, body, meta);
  if (message.waitingFor) {
    // Held: sent once the user accepts the keys (the banner's button), or discarded.
    item.dataset.waiting = "true";
    meta.textContent = `${time} · pending`;
    const waiting = document.createElement("div");
    waiting.className = "unsent-waiting";
    waiting.textContent = `Waiting until you accept ${message.waitingFor.join(", ")}'s new keys.`;
    waiting.append(" ", discardButton(message));
    item.append(waiting);
  }
  if (message.state === "failed") {
    const failure = document.createElement("div");
    failure.className = "unsent-error";
    failure.textContent = `Not sent: ${message.error ?? "refused by the server"}.`;
    failure.append(" ", discardButton(message));
    item.append(failure);
  }
  return item;
}

function discardButton(message: UnsentMessage): HTMLButtonElement {
  const discard = document.createElement("button");
  discard.type = "button";
  discard.className = "discard";
  discard.textContent = "Discard";
  discard.onclick = () =>
    void core?.discard(message.clientMessageId).catch((error) => say("conversation-status", `Not discarded: ${errorText(error)}`, "error"));
  return discard;
}

function onLiveMessage(message: ShownMessage): void {
  if (message.conversationId !== currentId) return;
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
  addMessage(message);
  renderUnreadable();
  if (atBottom || message.mine) list.scrollTop = list.scrollHeight;
  if (!message.mine) {
    const timer = typingTimers.get(message.senderUserId);
    if (timer) clearTimeout(timer);
    typingTimers.delete(message.senderUserId);
    renderTyping();
  }
  if (document.visibilityState === "visible") void markRead();
}

function onReceipt(conversationId: string, userId: string, readSequence: number): void {
  if (conversationId !== currentId) return;
  readBy.set(userId, Math.max(readBy.get(userId) ?? 0, readSequence));
  updateReceipts();
}

/** Marks the user's own messages that someone else has read. */
function updateReceipts(): void {
  if (!core) return;
  const readers = [...readBy.entries()];
  for (const item of $("messages").querySelectorAll<HTMLElement>('.message[data-mine="true"]:not(.unsent)')) {
    const sequence = Number(item.dataset.seq);
    const names = readers.filter(([, read]) => read >= sequence).map(([userId]) => core!.nameOf(userId));
    const meta = item.querySelector(".meta")!;
    const time = meta.textContent!.replace(/ · .*$/, "");
    meta.textContent = names.length ? `${time} · read ✓✓` : `${time} · sent ✓`;
    item.dataset.read = String(names.length > 0);
  }
}

function onTyping(conversationId: string, userId: string): void {
  if (conversationId !== currentId) return;
  const previous = typingTimers.get(userId);
  if (previous) clearTimeout(previous);
  typingTimers.set(
    userId,
    setTimeout(() => {
      typingTimers.delete(userId);
      renderTyping();
    }, 4000),
  );
  renderTyping();
}

function renderTyping(): void {
  const names = [...typingTimers.keys()].map((id) => core?.nameOf(id) ?? id);
  $("typing").textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
}

async function send(): Promise<void> {
  const input = $<HTMLTextAreaElement>("text");
  const text = input.value.trim();
  if (!core || !currentId || !text) return;
  input.value = "";
  const button = $<HTMLButtonElement>("send");
  button.disabled = true;
  try {
    const conversationId = currentId;
    // Queued (shown as pending by the `unsent` event) and sent as soon as the server answers.
    // Held while a participant's new keys wait for the user's decision: the banner says why.
    const queued = await core.send(conversationId, text);
    if (conversationId === currentId) say("conversation-status", "");
    if (queued.waitingFor) updateKeyBanner();
  } catch (error) {
    input.value = text;
    say("conversation-status", `Not sent: ${errorText(error)}`, "error");
  } finally {
    button.disabled = false;
    input.focus();
  }
}

// ---------------------------------------------------------------- safety numbers, groups

/** A key or membership change: in the open conversation when it concerns it (at once, so
 * before anything is sealed for it), and remembered by the core for the others. */
function onNotice(notice: Notice): void {
  if (!core || !currentId || !core.concerns(notice, currentId)) return;
  addNotice(notice);
  if (notice.kind === "keys") {
    $("key-warning-text").textContent = notice.text;
    $("key-warning").hidden = false;
  }
  updateKeyBanner();
}

/** A notice as an item of the message list, after the messages shown so far. */
function addNotice(notice: Notice): void {
  const item = document.createElement("li");
  item.className = "notice";
  item.dataset.kind = notice.kind;
  item.dataset.blocked = String(notice.blocked);
  item.setAttribute("role", "status");
  // Ordered among messages as if it came right after the newest shown.
  item.dataset.seq = String(Math.max(0, ...[...shown.values()].map((m) => m.sequence)) + 0.5);
  item.textContent = notice.text;
  const list = $("messages");
  list.append(item);
  list.scrollTop = list.scrollHeight;
}

/** The banner over the conversation: shown, with "Accept the new keys", while a participant's
 * keys wait for the user's decision (nothing is sent to them meanwhile). */
function updateKeyBanner(): void {
  if (!core || !currentId) return;
  const pending = core.pendingIn(currentId);
  const accept = $<HTMLButtonElement>("accept-keys");
  accept.hidden = pending.length === 0;
  if (pending.length > 0) {
    const names = pending.map((id) => core!.nameOf(id)).join(", ");
    $("key-warning-text").textContent =
      `⚠ ${names}'s keys changed and are not accepted: nothing is sent to them until you compare safety numbers, or accept the new keys.`;
    $("key-warning").hidden = false;
  }
  updateVerifiedMark();
}

async function acceptKeys(): Promise<void> {
  if (!core || !currentId) return;
  for (const userId of core.pendingIn(currentId)) await core.trust(userId);
  $("accept-keys").hidden = true;
  $("key-warning").hidden = true;
  say("conversation-status", "");
}

// ---------------------------------------------------------------- unlocking sealed keys

function showUnlock(locked: LockedDevice, message = ""): void {
  $("auth").hidden = true;
  $("app").hidden = true;
  $("unlock").hidden = false;
  $("unlock-user").textContent = locked.device.username;
  say("unlock-status", message);
  document.body.dataset.screen = "unlock";
  $("unlock-form").onsubmit = async (event) => {
    event.preventDefault();
    const input = $<HTMLInputElement>("unlock-passphrase");
    say("unlock-status", "Unlocking…");
    try {
      const session = await locked.unlock(input.value);
      input.value = "";
      await enter(session);
    } catch (error) {
      say("unlock-status", errorText(error), "error");
    }
  };
  $("unlock-logout").onclick = async () => {
    await locked.logout();
    showAuth("Logged out. This device's keys stay sealed in this browser.");
  };
  $("unlock-passphrase").focus();
}

async function showSafetyNumber(): Promise<void> {
  const conversation = core && currentId ? core.conversations.get(currentId) : undefined;
  if (!core || !conversation || conversation.kind !== "direct") return;
  const panel = $("panel");
  panel.hidden = false;
  panel.textContent = "Computing…";
  const number = await core.safetyNumber(conversation.peerUserId);
  const heading = document.createElement("div");
  heading.textContent = `Compare this number with ${conversation.name}, in person or on a call. If it matches, your messages reach only their devices.`;
  const digits = document.createElement("div");
  digits.id = "safety-number";
  digits.className = "safety-number";
  digits.textContent = number;
  const verified = core.isVerified(conversation.peerUserId);
  const row = document.createElement("div");
  row.className = "row";
  const mark = document.createElement("button");
  mark.id = "mark-verified";
  mark.textContent = verified ? "Verified ✓" : "Mark as verified";
  mark.disabled = verified;
  mark.onclick = async () => {
    await core!.markVerified(conversation.peerUserId);
    mark.textContent = "Verified ✓";
    mark.disabled = true;
    $("key-warning").hidden = true;
    $("accept-keys").hidden = true;
    updateVerifiedMark();
  };
  const close = document.createElement("button");
  close.textContent = "Close";
  close.onclick = () => (panel.hidden = true);
  row.append(mark, close);
  panel.replaceChildren(heading, digits, row);
}

// ---------------------------------------------------------------- wiring

function wire(): void {
  $("auth-form").onsubmit = (event) => {
    event.preventDefault();
    void authenticate(false);
  };
  $("register").onclick = () => void authenticate(true);
  $("logout").onclick = async () => {
    await core?.logout();
    core = undefined;
    currentId = undefined;
    history.replaceState(null, "", "#");
    showAuth("Logged out.");
  };
  $("new-chat").onsubmit = async (event) => {
    event.preventDefault();
    const input = $<HTMLInputElement>("new-chat-name");
    try {
      const id = await core!.openDirect(input.value.trim());
      say("sidebar-status", "");
      input.value = "";
      await openConversation(id);
    } catch (error) {
      say("sidebar-status", errorText(error), "error");
    }
  };
  $("new-group").onsubmit = async (event) => {
    event.preventDefault();
    const name = $<HTMLInputElement>("new-group-name");
    const members = $<HTMLInputElement>("new-group-members");
    try {
      const usernames = members.value.split(",").map((s) => s.trim()).filter(Boolean);
      const id = await core!.createGroup(name.value.trim(), usernames);
      name.value = "";
      members.value = "";
      $<HTMLDetailsElement>("new-group-box").open = false;
      say("sidebar-status", "");
      await openConversation(id);
    } catch (error) {
      say("sidebar-status", errorText(error), "error");
    }
  };
  $("composer").onsubmit = (event) => {
    event.preventDefault();
    void send();
  };
  const text = $<HTMLTextAreaElement>("text");
  text.onkeydown = (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      void send();
    }
  };
  text.oninput = () => {
    if (core && currentId && text.value && Date.now() - lastTypingSent > 2500) {
      lastTypingSent = Date.now();
      void core.typing(currentId);
    }
  };
  $("messages").onscroll = () => {
    if ($("messages").scrollTop < 40) void loadOlder();
  };
  $("back").onclick = () => {
    $("app").dataset.view = "list";
    currentId = undefined;
    history.replaceState(null, "", "#");
    renderConversations();
  };
  $("safety").onclick = () => void showSafetyNumber();
  $("accept-keys").onclick = () => void acceptKeys();
  $("members").onclick = () => {
    const conversation = core && currentId ? core.conversations.get(currentId) : undefined;
    if (core && conversation?.kind === "group") void showMembers(core, conversation.groupId, membersHost);
  };
  $("devices").onclick = () => {
    if (!core) return;
    $("empty").hidden = true;
    $("conversation").hidden = true;
    $("devices-view").hidden = false;
    $("app").dataset.view = "devices";
    void showDevices(core);
  };
  $("devices-close").onclick = () => {
    $("devices-view").hidden = true;
    if (currentId) {
      $("conversation").hidden = false;
      $("app").dataset.view = "conversation";
    } else {
      $("empty").hidden = false;
      $("app").dataset.view = "list";
    }
  };
  // The browser says when its network goes and comes back; the stream alone may not notice.
  window.addEventListener("offline", () => core?.networkChanged(false));
  window.addEventListener("online", () => core?.networkChanged(true));
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") void markRead();
  });
}

wire();
void boot();
