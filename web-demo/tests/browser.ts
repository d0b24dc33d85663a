// Browser scenarios in real Chromium (playwright-core, /usr/bin/chromium: no browser download),
// against the real gateway serving the built app. client/tests/web_demo bundles and runs this:
//
//   node browser.mjs <direct|vectors|decryption|turns|cli|reload|restart|outbox|lostanswer|history|recent|tokens|policy|attacks|replays|keys|groups|errors|devices|newdevice|restarts> <gateway URL>
//
// What only the test's stack can do (CLI users from the Rust `client` library, stopping and
// starting the gateway or chat) is asked for with a line `@@ {"id":N,"op":...}` on stdout; the answer is
// one JSON line on stdin. Every wait is on DOM state (or on the CLI's history), never a sleep.
// Screenshots go to $SCREENSHOT_DIR.

import { createInterface } from "node:readline";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";

import type { VectorOutcome } from "./e2ee-vectors.browser";

const [scenario, baseUrl] = process.argv.slice(2);
const screenshotDir = process.env.SCREENSHOT_DIR ?? "screenshots";
// Every user's password: the Rust side's (testkit::PASSWORD), which its CLI users log in with too.
const PASSWORD =
  process.env.TEST_PASSWORD ??
  (() => {
    throw new Error("TEST_PASSWORD is not set (client/tests/web_demo sets it)");
  })();
const TIMEOUT = 30_000;

// ---------------------------------------------------------------- requests to the Rust side

const pending = new Map<number, (answer: { ok: boolean; value?: unknown; error?: string }) => void>();
let nextId = 1;
createInterface({ input: process.stdin }).on("line", (line) => {
  const answer = JSON.parse(line);
  pending.get(answer.id)?.(answer);
  pending.delete(answer.id);
});

async function ask<T = unknown>(op: string, args: Record<string, unknown> = {}): Promise<T> {
  const id = nextId++;
  const answer = await new Promise<{ ok: boolean; value?: unknown; error?: string }>((resolve) => {
    pending.set(id, resolve);
    console.log(`@@ ${JSON.stringify({ id, op, ...args })}`);
  });
  if (!answer.ok) throw new Error(`${op} failed: ${answer.error}`);
  return answer.value as T;
}

interface CliMessage {
  sequence: number;
  from: string;
  text: string | null;
  /** What the CLI flags about the sender's chain at this message. */
  chain: string[];
}

/** Waits until the CLI user's history with `to` holds `text`. */
async function cliSees(as: string, to: string, text: string): Promise<CliMessage[]> {
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const history = await ask<CliMessage[]>("cli_history", { as, to });
    if (history.some((m) => m.text === text)) return history;
    if (Date.now() > deadline) throw new Error(`${as} never saw "${text}": ${JSON.stringify(history)}`);
    await new Promise((resolve) => setTimeout(resolve, 100)); // polling the server, not waiting for time
  }
}

// ---------------------------------------------------------------- the page

interface User {
  name: string;
  page: Page;
  errors: string[];
}

let browser: Browser;
let step = "start";

/** A browser context whose pages report every Content-Security-Policy violation to `errors`
 * (Chromium also logs them to the console; the event names the directive). Init scripts run
 * before the page's own and are not subject to its policy. */
async function newContext(errors: string[]): Promise<BrowserContext> {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  await context.exposeBinding("reportPolicyViolation", (_source, violation: string) => {
    errors.push(`CSP violation: ${violation}`);
  });
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (event) => {
      const report = (window as unknown as { reportPolicyViolation(violation: string): void }).reportPolicyViolation;
      report(`${event.effectiveDirective} blocked ${event.blockedURI || "inline"}`);
    });
  });
  return context;
}

async function newPage(errors: string[]): Promise<Page> {
  const page = await (await newContext(errors)).newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(message.text());
  });
  page.on("pageerror", (error) => errors.push(String(error)));
  return page;
}

async function newUser(name: string, beforeRegister?: (page: Page) => Promise<void>): Promise<User> {
  const errors: string[] = [];
  const page = await newPage(errors);
  const response = await page.goto(baseUrl);
  // Every scenario runs under the gateway's policy: a violation is an error in noConsoleErrors.
  if (!response?.headers()["content-security-policy"]?.includes("script-src 'self'")) {
    throw new Error(`the page is served without its Content-Security-Policy: ${JSON.stringify(response?.headers())}`);
  }
  await page.waitForSelector("body[data-screen=auth]");
  await page.fill("#username", name);
  await page.fill("#password", PASSWORD);
  await beforeRegister?.(page);
  await page.click("#register");
  await page.waitForSelector("body[data-screen=app]", { timeout: 60_000 });
  await online(page);
  return { name, page, errors };
}

async function online(page: Page): Promise<void> {
  await page.waitForSelector("#conn[data-state=online]");
}

async function openChatWith(user: User, peer: string): Promise<void> {
  await user.page.fill("#new-chat-name", peer);
  await user.page.press("#new-chat-name", "Enter");
  await user.page.waitForSelector(`#title:text-is("${peer}")`);
}

async function openConversation(user: User, name: string): Promise<void> {
  await user.page.click(`#conversations li[data-name="${name}"]`);
  await user.page.waitForSelector(`#app[data-view="conversation"] #title:text-is("${name}")`);
}

async function send(user: User, text: string): Promise<void> {
  await user.page.fill("#text", text);
  await user.page.press("#text", "Enter");
  await sees(user, text, true);
}

async function sees(user: User, text: string, mine = false): Promise<void> {
  await user.page.waitForSelector(
    `#messages .message[data-mine="${mine}"][data-status=verified] .body:text-is(${JSON.stringify(text)})`,
  );
}

async function texts(user: User): Promise<string[]> {
  return user.page.$$eval("#messages .message .body", (bodies) => bodies.map((b) => b.textContent ?? ""));
}

async function screenshot(user: User, name: string): Promise<void> {
  mkdirSync(screenshotDir, { recursive: true });
  await user.page.screenshot({ path: join(screenshotDir, `${name}.png`) });
}

function expectEqual<T>(actual: T, expected: T, what: string): void {
  if (JSON.stringify(actual) !== JSON.stringify(expected)) {
    throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

function noConsoleErrors(users: User[], allowed: RegExp[] = []): void {
  for (const user of users) {
    const errors = user.errors.filter((e) => !allowed.some((pattern) => pattern.test(e)));
    expectEqual(errors, [], `console errors of ${user.name}`);
  }
}

const unique = (prefix: string) => `${prefix}${Math.random().toString(36).slice(2, 7)}`;

// ---------------------------------------------------------------- scenarios

/** Two browsers register and chat in real time: unread counts, typing, receipts, safety numbers. */
async function direct(): Promise<void> {
  step = "register";
  const alice = await newUser(unique("alice"), (page) =>
    page.screenshot({ path: join(screenshotDir, "login.png") }).then(() => undefined),
  );
  // Bob keeps this device: logging out later leaves its keys in the browser.
  const bob = await newUser(unique("bob"), (page) => page.check("#keep-device"));

  step = "alice writes to bob";
  await openChatWith(alice, bob.name);
  await send(alice, "hi bob, this is end-to-end encrypted");
  await bob.page.waitForSelector(`#conversations li[data-name="${alice.name}"] .unread:text-is("1")`);
  await screenshot(bob, "conversation-list");

  step = "bob reads and answers";
  await openConversation(bob, alice.name);
  await sees(bob, "hi bob, this is end-to-end encrypted");
  await alice.page.waitForSelector('#messages .message[data-mine="true"][data-read="true"]');
  await bob.page.type("#text", "typing…");
  await alice.page.waitForSelector(`#typing:has-text("${bob.name} is typing")`);
  await bob.page.fill("#text", "");
  await send(bob, "hello alice 👋");
  await sees(alice, "hello alice 👋");

  step = "safety numbers";
  await alice.page.click("#safety");
  await bob.page.click("#safety");
  const aliceNumber = await alice.page.textContent("#safety-number");
  const bobNumber = await bob.page.textContent("#safety-number");
  if (!aliceNumber || !/^(\d{5} ){11}\d{5}$/.test(aliceNumber)) throw new Error(`bad safety number ${aliceNumber}`);
  expectEqual(aliceNumber, bobNumber, "both sides' safety numbers");
  await screenshot(alice, "conversation-desktop");
  if (await alice.page.isVisible("#verified-mark")) throw new Error("a verified mark before verifying");
  await alice.page.click("#mark-verified");
  await alice.page.waitForSelector('#mark-verified:text-is("Verified ✓")');

  step = "the verified mark in the header, after a reload too, and only on the side that verified";
  await alice.page.waitForSelector("#verified-mark:visible");
  await alice.page.reload();
  await alice.page.waitForSelector(`#title:text-is("${bob.name}")`);
  await alice.page.waitForSelector("#verified-mark:visible");
  await online(alice.page);
  await sees(alice, "hello alice 👋");
  await screenshot(alice, "verified");
  await alice.page.waitForSelector("#composer-hint:visible"); // on a desktop, the keys are explained
  if (await bob.page.isVisible("#verified-mark")) throw new Error("bob, who did not verify, shows a verified mark");

  step = "log out and in again: the same device (kept), its keys still in IndexedDB";
  const bobsDevice = await bob.page.getAttribute("body", "data-device");
  await bob.page.click("#logout");
  await bob.page.waitForSelector("body[data-screen=auth]");
  await bob.page.fill("#username", bob.name);
  await bob.page.fill("#password", PASSWORD);
  await bob.page.click("#login");
  await bob.page.waitForSelector("body[data-screen=app]");
  await online(bob.page);
  expectEqual(await bob.page.getAttribute("body", "data-device"), bobsDevice, "bob's device after logging in again");
  await openConversation(bob, alice.name);
  await sees(bob, "hi bob, this is end-to-end encrypted");
  await sees(bob, "hello alice 👋", true);

  step = "phone-sized window: the composer's placeholder fits";
  await bob.page.setViewportSize({ width: 390, height: 844 });
  const fit = await bob.page.$eval("#text", (input) => {
    const textarea = input as HTMLTextAreaElement;
    const style = getComputedStyle(textarea);
    const context = document.createElement("canvas").getContext("2d")!;
    context.font = `${style.fontStyle} ${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
    const room = textarea.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    return { placeholder: textarea.placeholder, width: context.measureText(textarea.placeholder).width, room };
  });
  if (!fit.placeholder || fit.width > fit.room) throw new Error(`the placeholder is cut off: ${JSON.stringify(fit)}`);
  if (await bob.page.isVisible("#composer-hint")) throw new Error("the keyboard hint takes room on a phone");
  await screenshot(bob, "conversation-phone");
  await bob.page.click("#back");
  await bob.page.waitForSelector("#conversations li:visible");
  await screenshot(bob, "conversation-list-phone");
  noConsoleErrors([alice, bob]);
}

/** A browser and a CLI user (the Rust client library): direct messages both ways, then a group
 * of three (two browsers, one CLI member) with messages both ways. */
async function cli(): Promise<void> {
  step = "register";
  const carol = unique("carol");
  await ask("cli_user", { username: carol });
  const alice = await newUser(unique("alice"));
  const bob = await newUser(unique("bob"));

  step = "browser to CLI, direct";
  await openChatWith(alice, carol);
  await send(alice, "hello carol, from the browser");
  await cliSees(carol, alice.name, "hello carol, from the browser");

  step = "CLI to browser, direct";
  await ask("cli_send", { as: carol, to: alice.name, text: "hello alice, from the CLI" });
  await sees(alice, "hello alice, from the CLI");

  step = "a new CLI device: the browser adapts its send and warns";
  await ask("cli_new_device", { username: carol });
  await send(alice, "this reaches your new device too");
  await alice.page.waitForSelector(`#key-warning:visible:has-text("${carol}'s keys changed")`);
  await cliSees(carol, alice.name, "this reaches your new device too");

  step = "the browser and the CLI show the same safety number";
  await alice.page.click("#safety");
  const browserNumber = await alice.page.textContent("#safety-number");
  expectEqual(browserNumber, await ask("cli_safety_number", { as: carol, with: alice.name }), "safety numbers");
  await alice.page.click("#panel button:text-is('Close')");

  step = "a group of three";
  const group = unique("trio-");
  await alice.page.click("#new-group-box summary");
  await alice.page.fill("#new-group-name", group);
  await alice.page.fill("#new-group-members", `${bob.name}, ${carol}`);
  await alice.page.press("#new-group-members", "Enter");
  await alice.page.waitForSelector(`#title:text-is("# ${group}")`);
  await send(alice, "welcome to the group");
  await cliSees(carol, `#${group}`, "welcome to the group");
  await bob.page.waitForSelector(`#conversations li[data-name="# ${group}"]`);
  await openConversation(bob, `# ${group}`);
  await sees(bob, "welcome to the group");

  step = "CLI to the group";
  await ask("cli_send", { as: carol, to: `#${group}`, text: "carol here, on the CLI" });
  await sees(alice, "carol here, on the CLI");
  await sees(bob, "carol here, on the CLI");

  step = "browser to the group";
  await send(bob, "bob here, in the browser");
  await sees(alice, "bob here, in the browser");
  const history = await cliSees(carol, `#${group}`, "bob here, in the browser");
  expectEqual(
    history.map((m) => m.text),
    ["welcome to the group", "carol here, on the CLI", "bob here, in the browser"],
    "the CLI's group history",
  );
  await bob.page.click("#members");
  await bob.page.waitForSelector(`#member-list li[data-username="${carol}"]`);
  await screenshot(bob, "group");

  step = "the owner removes the CLI member";
  await alice.page.click("#members");
  await alice.page.click(`#member-list li[data-username="${carol}"] button:text-is("Remove")`);
  await alice.page.waitForSelector(`#member-list:not(:has(li[data-username="${carol}"]))`);
  await send(alice, "just the two of us now");
  await sees(bob, "just the two of us now");
  const after = await ask<CliMessage[]>("cli_history", { as: carol, to: `#${group}` }).catch(() => []);
  if (after.some((m) => m.text === "just the two of us now")) throw new Error("a removed member still reads the group");
  noConsoleErrors([alice, bob]);
}

/** A page reload resumes: messages sent while it reloads arrive once, none is lost or doubled. */
async function reload(): Promise<void> {
  step = "register";
  const carol = unique("carol");
  await ask("cli_user", { username: carol });
  const alice = await newUser(unique("alice"));
  await openChatWith(alice, carol);
  await ask("cli_send", { as: carol, to: alice.name, text: "one" });
  await sees(alice, "one");

  step = "reload while messages arrive";
  const reloading = alice.page.reload();
  await ask("cli_send", { as: carol, to: alice.name, text: "two" });
  await ask("cli_send", { as: carol, to: alice.name, text: "three" });
  await reloading;
  await alice.page.waitForSelector("body[data-screen=app]");
  await online(alice.page);
  await alice.page.waitForSelector(`#title:text-is("${carol}")`);
  await sees(alice, "three");

  step = "live after the reload";
  await ask("cli_send", { as: carol, to: alice.name, text: "four" });
  await sees(alice, "four");
  await send(alice, "five");
  expectEqual(await texts(alice), ["one", "two", "three", "four", "five"], "messages after the reload");
  const sequences = await alice.page.$$eval("#messages .message", (items) =>
    items.map((item) => Number((item as HTMLElement).dataset.seq)),
  );
  expectEqual(sequences, [1, 2, 3, 4, 5], "sequences after the reload");
  await cliSees(carol, alice.name, "five");

  step = "a message altered by the server fails verification";
  const conversationId = await alice.page.getAttribute("#messages", "data-conversation-id");
  expectEqual(await ask("tamper", { conversation_id: conversationId, sequence: 2 }), 1, "altered rows");
  await alice.page.reload();
  await alice.page.waitForSelector('#messages .message[data-seq="2"][data-status=failed]');
  await sees(alice, "three");
  const shownTexts = await texts(alice);
  if (shownTexts.includes("two")) throw new Error("the altered message's text is shown");
  await screenshot(alice, "failed-verification");

  step = "a message the server drops is flagged on the next one";
  // A user whose page is away while carol writes: no stream follows the new conversation, so
  // what the server stores is all it delivers.
  const erin = await newUser(unique("erin"));
  const appUrl = erin.page.url();
  await erin.page.goto("about:blank");
  for (const text of ["six", "seven", "eight"]) await ask("cli_send", { as: carol, to: erin.name, text });
  // Sequences 1, 2, 3: the server drops seven and renumbers eight to 2.
  expectEqual(
    await ask("drop", { as: carol, to: erin.name, sequence: 2 }),
    5,
    "rows changed by the drop (a message, its two keys moved, the next message, the count)",
  );
  await erin.page.goto(appUrl);
  await erin.page.waitForSelector("body[data-screen=app]");
  await online(erin.page);
  await openConversation(erin, carol);
  await sees(erin, "eight");
  const warning = await erin.page.textContent('#messages .message[data-seq="2"] .chain-warning');
  if (!warning?.includes("message 2 of this sender's device never arrived")) {
    throw new Error(`no gap shown on the message after the dropped one: ${warning}`);
  }
  if (await erin.page.$('#messages .message[data-seq="1"] .chain-warning')) throw new Error("a warning before the gap");
  if ((await texts(erin)).includes("seven")) throw new Error("the dropped message was delivered");
  await screenshot(erin, "chain-gap");
  noConsoleErrors([alice, erin]);
}

/** The gateway stops and starts again: the page shows it, reconnects and resumes from its cursor. */
async function restart(): Promise<void> {
  step = "register";
  const carol = unique("carol");
  await ask("cli_user", { username: carol });
  const alice = await newUser(unique("alice"));
  await openChatWith(alice, carol);
  await ask("cli_send", { as: carol, to: alice.name, text: "before the restart" });
  await sees(alice, "before the restart");

  step = "gateway stopped";
  await ask("gateway_stop");
  await alice.page.waitForSelector("#conn[data-state=offline]");
  await screenshot(alice, "offline");

  step = "gateway started";
  await ask("gateway_start");
  await ask("cli_send", { as: carol, to: alice.name, text: "while you were away" });
  await online(alice.page);
  await sees(alice, "while you were away");
  await send(alice, "back online");
  await cliSees(carol, alice.name, "back online");
  expectEqual(await texts(alice), ["before the restart", "while you were away", "back online"], "messages");
  // Chromium logs the refused connections of the reconnection attempts; nothing else may appear.
  noConsoleErrors([alice], [/ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|ERR_CONNECTION_RESET|Failed to fetch|ERR_INCOMPLETE_CHUNKED_ENCODING/]);
}

/** Messages written while chat is down: pending, kept across a reload, delivered once each when
 * chat is back, with no gap in the chain; a message refused for good: failed, discarded, no gap;
 * a group message written while the gateway is down: sealed for the members last listed, sent once. */
async function outbox(): Promise<void> {
  step = "register";
  const carol = unique("carol");
  await ask("cli_user", { username: carol });
  const alice = await newUser(unique("alice"));
  await openChatWith(alice, carol);
  await send(alice, "before chat stops");
  await cliSees(carol, alice.name, "before chat stops");

  step = "chat stops: what alice writes is pending";
  await ask("chat_stop");
  await alice.page.waitForSelector("#conn[data-state=offline]");
  const written = ["written while chat is down", "and a second one"];
  for (const text of written) {
    await alice.page.fill("#text", text);
    await alice.page.press("#text", "Enter");
    await alice.page.waitForSelector(`#messages .message[data-status=pending] .body:text-is("${text}")`);
  }
  expectEqual(await alice.page.inputValue("#text"), "", "the composer once the message is queued");
  const pendingIds = () =>
    alice.page.$$eval("#messages .message[data-status=pending]", (items) =>
      items.map((item) => (item as HTMLElement).dataset.clientMessageId ?? ""),
    );
  const ids = await pendingIds();
  expectEqual(ids.length, 2, "pending messages");
  await screenshot(alice, "pending");

  step = "a reload while chat is still down: still pending, in their conversation";
  await alice.page.reload();
  await alice.page.waitForSelector("body[data-screen=app]");
  await alice.page.waitForSelector(`#title:text-is("${carol}")`);
  await alice.page.waitForSelector(`#messages .message[data-status=pending] .body:text-is("${written[1]}")`);
  expectEqual(await pendingIds(), ids, "pending messages after the reload (same client message ids, same order)");
  expectEqual(await texts(alice), written, "what the reloaded page shows without chat");
  for (const id of ids) expectEqual(await ask("message_rows", { client_message_id: id }), 0, "rows stored while chat is down");

  step = "chat is back: each delivered once, in order, with no gap in alice's chain";
  await ask("chat_start");
  for (const text of written) await sees(alice, text, true);
  await alice.page.waitForSelector("#messages:not(:has(.message.unsent))", { state: "attached" });
  await online(alice.page);
  await sees(alice, "before chat stops", true);
  expectEqual(await texts(alice), ["before chat stops", ...written], "alice's conversation");
  const history = await cliSees(carol, alice.name, written[1]);
  expectEqual(history.map((m) => m.text), ["before chat stops", ...written], "carol's history");
  expectEqual(history.flatMap((m) => m.chain), [], "what carol's CLI flags in alice's chain");
  for (const id of ids) expectEqual(await ask("message_rows", { client_message_id: id }), 1, "rows stored per message");

  step = "a message the server refuses for good (too large): shown failed, discarded, and no gap after it";
  await alice.page.fill("#text", "x".repeat(70_000));
  await alice.page.press("#text", "Enter");
  await alice.page.waitForSelector('#messages .message[data-status=not-sent] .unsent-error:has-text("Not sent:")');
  await screenshot(alice, "not-sent");
  await alice.page.click("#messages .message[data-status=not-sent] button.discard");
  await alice.page.waitForSelector("#messages:not(:has(.message.unsent))", { state: "attached" });
  await send(alice, "after the refused one");
  const after = await cliSees(carol, alice.name, "after the refused one");
  expectEqual(after.map((m) => m.text), ["before chat stops", ...written, "after the refused one"], "carol's history");
  expectEqual(after.flatMap((m) => m.chain), [], "what carol's CLI flags after the refused message");

  step = "after a reload nothing is left in the queue";
  await alice.page.reload();
  await alice.page.waitForSelector(`#title:text-is("${carol}")`);
  await sees(alice, "after the refused one", true);
  expectEqual(await texts(alice), ["before chat stops", ...written, "after the refused one"], "alice's conversation after a reload");

  step = "the gateway stops: a message to a group is sealed for its members as last listed, pending, and goes once";
  const group = unique("outbox-");
  await alice.page.click("#new-group-box summary");
  await alice.page.fill("#new-group-name", group);
  await alice.page.fill("#new-group-members", carol);
  await alice.page.press("#new-group-members", "Enter");
  await alice.page.waitForSelector(`#title:text-is("# ${group}")`);
  await send(alice, "welcome to the group");
  await ask("gateway_stop");
  await alice.page.waitForSelector("#conn[data-state=offline]");
  await alice.page.fill("#text", "to the group while the gateway is down");
  await alice.page.press("#text", "Enter");
  await alice.page.waitForSelector('#messages .message[data-status=pending] .body:text-is("to the group while the gateway is down")');
  const [groupId] = await pendingIds();
  await ask("gateway_start");
  await sees(alice, "to the group while the gateway is down", true);
  const groupHistory = await cliSees(carol, `#${group}`, "to the group while the gateway is down");
  expectEqual(groupHistory.map((m) => m.text), ["welcome to the group", "to the group while the gateway is down"], "carol's group history");
  expectEqual(groupHistory.flatMap((m) => m.chain), [], "what carol's CLI flags in alice's chain in the group");
  expectEqual(await ask("message_rows", { client_message_id: groupId }), 1, "rows stored for the group message");

  step = "a reload without the server: the conversations last listed, and sends sealed for the devices and members kept";
  const toCarol = [...written, "after the refused one"];
  const toGroup = ["welcome to the group", "to the group while the gateway is down"];
  const copies = await pageCopies(alice);
  await ask("gateway_stop");
  await alice.page.waitForSelector("#conn[data-state=offline]");
  await alice.page.route((url) => copies.has(url.href), (route) => route.fulfill(copies.get(route.request().url())!));
  await alice.page.reload();
  await alice.page.waitForSelector("body[data-screen=app]");
  await alice.page.waitForSelector(`#conversations li[data-name="# ${group}"]`);
  await openConversation(alice, carol);
  await writePending(alice, "to carol after a reload without the server");
  const [directId] = await pendingIds();
  await openConversation(alice, `# ${group}`);
  await writePending(alice, "to the group after a reload without the server");
  const [groupReloadId] = await pendingIds();
  for (const id of [directId, groupReloadId]) expectEqual(await ask("message_rows", { client_message_id: id }), 0, "rows stored while the gateway is down");
  await screenshot(alice, "pending-after-offline-reload");
  await alice.page.unrouteAll();
  await ask("gateway_start");
  await sees(alice, "to the group after a reload without the server", true);
  toCarol.push("to carol after a reload without the server");
  toGroup.push("to the group after a reload without the server");
  const directAfter = await cliSees(carol, alice.name, toCarol.at(-1)!);
  expectEqual(directAfter.map((m) => m.text), ["before chat stops", ...toCarol], "carol's history after the offline reload");
  expectEqual(directAfter.flatMap((m) => m.chain), [], "what carol's CLI flags in alice's chain after the offline reload");
  const groupAfter = await cliSees(carol, `#${group}`, toGroup.at(-1)!);
  expectEqual(groupAfter.map((m) => m.text), toGroup, "carol's group history after the offline reload");
  expectEqual(groupAfter.flatMap((m) => m.chain), [], "what carol's CLI flags in the group after the offline reload");
  for (const id of [directId, groupReloadId]) expectEqual(await ask("message_rows", { client_message_id: id }), 1, "rows stored per message");

  step = "carol, verified, gets a new device: what alice writes is held until she accepts it, after a reload too";
  await openConversation(alice, carol);
  await alice.page.click("#safety");
  await alice.page.click("#mark-verified");
  await alice.page.waitForSelector('#mark-verified:text-is("Verified ✓")');
  await alice.page.click("#panel button:text-is('Close')");
  await ask("cli_new_device", { username: carol });
  await alice.page.waitForSelector(`#messages .notice[data-kind=keys][data-blocked=true]:has-text("${carol}'s keys changed")`);
  const held = ["held until carol's new keys are accepted", "and held behind it"];
  for (const text of held) await writeHeld(alice, text, carol);
  const heldIds = await pendingIds();
  expectEqual(heldIds.length, 2, "held messages");
  await alice.page.reload();
  await alice.page.waitForSelector("body[data-screen=app]");
  await online(alice.page);
  await openConversation(alice, carol);
  for (const text of held) await heldIs(alice, text, carol);
  expectEqual(await pendingIds(), heldIds, "held messages after the reload (same client message ids, same order)");
  await alice.page.waitForSelector("#accept-keys:visible");
  await screenshot(alice, "held-for-keys");
  for (const id of heldIds) expectEqual(await ask("message_rows", { client_message_id: id }), 0, "rows stored for held messages");

  step = "the first is discarded; once alice accepts the keys the second goes to both of carol's devices, no gap in the chain";
  await alice.page.click(`#messages .message[data-client-message-id="${heldIds[0]}"] button.discard`);
  await alice.page.waitForSelector(`#messages:not(:has(.message[data-client-message-id="${heldIds[0]}"]))`, { state: "attached" });
  await heldIs(alice, held[1], carol);
  await alice.page.click("#accept-keys");
  await sees(alice, held[1], true);
  toCarol.push(held[1]);
  const afterAccept = await cliSees(carol, alice.name, held[1]);
  expectEqual(afterAccept.map((m) => m.text), ["before chat stops", ...toCarol], "carol's history once the keys are accepted");
  expectEqual(afterAccept.flatMap((m) => m.chain), [], "what carol's CLI flags after the discarded held message");
  const onNewDevice = await cliSees(`${carol}/new-device`, alice.name, held[1]);
  expectEqual(onNewDevice.filter((m) => m.text !== null).map((m) => m.text), [held[1]], "what carol's new device reads");
  expectEqual(await ask("message_rows", { client_message_id: heldIds[0] }), 0, "rows stored for the discarded message");
  expectEqual(await ask("message_rows", { client_message_id: heldIds[1] }), 1, "rows stored for the accepted message");
  // Checked after the round trips above: a message sent must not come back as unsent.
  expectEqual(await texts(alice), ["before chat stops", ...toCarol], "alice's conversation once the keys are accepted");
  expectEqual(await pendingIds(), [], "messages still pending");
  // Chromium logs the calls refused while chat or the gateway was down; nothing else may appear.
  noConsoleErrors([alice], [
    /Failed to load resource|ERR_CONNECTION_REFUSED|Failed to fetch|ERR_EMPTY_RESPONSE|ERR_CONNECTION_RESET|ERR_INCOMPLETE_CHUNKED_ENCODING/,
  ]);
}

/** Copies of what the gateway serves for the page (the document and its assets, with the
 * gateway's headers, its Content-Security-Policy among them), so that a reload can come from them
 * while the gateway is stopped, as from the browser's cache: every call of the page then fails. */
async function pageCopies(user: User): Promise<Map<string, { status: number; headers: Record<string, string>; body: Buffer }>> {
  const assets = await user.page.$$eval("script[src], link[rel=stylesheet]", (elements) =>
    elements.map((e) => (e as HTMLScriptElement).src || (e as HTMLLinkElement).href),
  );
  const copies = new Map<string, { status: number; headers: Record<string, string>; body: Buffer }>();
  const pageUrl = new URL(user.page.url());
  pageUrl.hash = ""; // the open conversation (requests carry no fragment)
  for (const url of [pageUrl.href, ...assets]) {
    const response = await user.page.request.get(url);
    const headers = { ...response.headers() };
    for (const name of ["content-encoding", "content-length", "transfer-encoding"]) delete headers[name];
    copies.set(url, { status: response.status(), headers, body: await response.body() });
  }
  if (!copies.get(pageUrl.href)?.headers["content-security-policy"]) throw new Error("the copy of the page has no policy");
  return copies;
}

/** Writes a message while a participant's new keys wait for the user: queued, held. */
async function writeHeld(user: User, text: string, waitingFor: string): Promise<void> {
  await user.page.fill("#text", text);
  await user.page.press("#text", "Enter");
  await heldIs(user, text, waitingFor);
  expectEqual(await user.page.inputValue("#text"), "", "the composer once the message is held");
}

async function heldIs(user: User, text: string, waitingFor: string): Promise<void> {
  await user.page.waitForSelector(
    `#messages .message[data-status=pending][data-waiting=true]:has(.body:text-is(${JSON.stringify(text)})) ` +
      `.unsent-waiting:has-text("Waiting until you accept ${waitingFor}'s new keys")`,
  );
}

/** Chat stores a message but its answer is lost on the way back: the page keeps it pending and
 * sends the same envelope again, which chat answers with the stored message. */
async function lostAnswer(): Promise<void> {
  step = "register";
  const carol = unique("carol");
  await ask("cli_user", { username: carol });
  const alice = await newUser(unique("alice"));
  await openChatWith(alice, carol);
  await send(alice, "first");

  step = "the answers of the next two sends are lost: the message is retried, stored once";
  await ask("lose_send_answers", { count: 2 });
  await send(alice, "stored, answer lost"); // shown once the stream delivers it
  // The page sends it again until an answer arrives (polling the proxy, not waiting for time).
  for (const deadline = Date.now() + TIMEOUT; (await ask<number>("send_answers_to_lose")) > 0; ) {
    if (Date.now() > deadline) throw new Error("the page did not send the message again");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const id = await alice.page.getAttribute('#messages .message[data-status=verified]:has(.body:text-is("stored, answer lost"))', "data-seq");
  expectEqual(id, "2", "the sequence alice shows");
  // The queue sends in order: "next" goes only once the retried message got its answer.
  await send(alice, "next");
  const history = await cliSees(carol, alice.name, "next");
  expectEqual(history.map((m) => m.text), ["first", "stored, answer lost", "next"], "carol's history");
  expectEqual(history.flatMap((m) => m.chain), [], "what carol's CLI flags in alice's chain");
  const conversationId = await alice.page.getAttribute("#messages", "data-conversation-id");
  expectEqual(await ask("conversation_rows", { conversation_id: conversationId }), 3, "rows in the conversation");
  await alice.page.reload();
  await alice.page.waitForSelector(`#title:text-is("${carol}")`);
  await sees(alice, "next", true);
  expectEqual(await texts(alice), ["first", "stored, answer lost", "next"], "alice's conversation after a reload");
  noConsoleErrors([alice], [/Failed to load resource/]);
}

/** A long conversation: the newest page first, older pages when scrolling up, unread counts. */
async function longHistory(): Promise<void> {
  step = "register";
  const carol = unique("carol");
  await ask("cli_user", { username: carol });
  const alice = await newUser(unique("alice"));

  step = "45 messages while the conversation is closed";
  await ask("cli_send_many", { as: carol, to: alice.name, prefix: "message", count: 45 });
  await alice.page.waitForSelector(`#conversations li[data-name="${carol}"] .unread:text-is("45")`);

  step = "the newest page";
  await openConversation(alice, carol);
  await sees(alice, "message 45");
  expectEqual((await texts(alice)).length, 30, "messages on the first page");
  await alice.page.waitForSelector('#messages[data-history-complete="false"]');

  step = "scrolling up";
  await alice.page.$eval("#messages", (list) => list.scrollTo(0, 0));
  await alice.page.waitForSelector('#messages[data-history-complete="true"]');
  await sees(alice, "message 1");
  const shownTexts = await texts(alice);
  expectEqual(shownTexts, Array.from({ length: 45 }, (_, i) => `message ${i + 1}`), "the whole history, in order");
  await alice.page.waitForSelector(`#conversations li[data-name="${carol}"]:not(:has(.unread))`);
  noConsoleErrors([alice]);
}

/** With 3-second access tokens: the stream is cut at each expiry, the page refreshes its tokens,
 * resumes and keeps sending and receiving. */
async function tokens(): Promise<void> {
  step = "register";
  const carol = unique("carol");
  await ask("cli_user", { username: carol });
  const alice = await newUser(unique("alice"));
  await openChatWith(alice, carol);
  await send(alice, "before expiry");

  step = "tokens expire";
  await alice.page.waitForFunction(() => Number(document.body.dataset.reconnects) >= 1 && Number(document.body.dataset.refreshes) >= 1);
  await online(alice.page);

  step = "after expiry";
  await ask("cli_send", { as: carol, to: alice.name, text: "after expiry" });
  await sees(alice, "after expiry");
  await send(alice, "still here");
  await cliSees(carol, alice.name, "still here");
  expectEqual(await texts(alice), ["before expiry", "after expiry", "still here"], "messages");
  await alice.page.waitForSelector("body[data-screen=app]");
  noConsoleErrors([alice]);
}

/** Injected scripts do not run under the page's policy, and the policy is what stops them.
 *
 * Two ways an attacker's markup could reach the page: inserted into the DOM (a DOM XSS), and
 * served inside the document (an HTML injection on the server's side). The second is simulated by
 * intercepting the navigation: the real gateway answers, its headers are kept, and the test adds
 * an inline script to the body. The same document served without the policy (the control) does
 * run the script, so the test's injection would be caught if the policy stopped working. */
async function policy(): Promise<void> {
  const marker = () => document.documentElement.dataset.injected ?? null;

  step = "the app boots under the policy";
  const errors: string[] = [];
  const page = await newPage(errors);
  await page.goto(baseUrl);
  await page.waitForSelector("body[data-screen=auth]");
  expectEqual(errors, [], "errors while the app loads");

  step = "a script inserted into the DOM";
  await page.evaluate(() => {
    const script = document.createElement("script");
    script.textContent = "document.documentElement.dataset.injected = 'dom script'";
    document.body.append(script);
    const image = document.createElement("img");
    image.setAttribute("onerror", "document.documentElement.dataset.injected = 'dom handler'");
    image.src = "/static/missing-image.png";
    document.body.append(image);
  });
  await waitForViolations(errors, 2);
  expectEqual(await page.evaluate(marker), null, "what the DOM-inserted scripts did");
  expectEqual(
    violationDirectives(errors),
    ["script-src-attr", "script-src-elem"],
    "the violations of the DOM-inserted scripts",
  );

  step = "an inline script served in the document";
  const injected = await injectedDocument(true);
  expectEqual(injected.marker, null, "what the injected inline script did");
  expectEqual(violationDirectives(injected.errors), ["script-src-elem"], "the violations of the injected document");

  step = "control: the same document without the policy runs the script";
  const control = await injectedDocument(false);
  expectEqual(control.marker, "html", "the injected script without the policy");
}

/** Loads the page with an inline script added to the gateway's real answer, with or without its
 * Content-Security-Policy header; returns what the script left and the errors seen. */
async function injectedDocument(keepPolicy: boolean): Promise<{ marker: string | null; errors: string[] }> {
  const errors: string[] = [];
  const page = await newPage(errors);
  await page.route(new URL("/", baseUrl).href, async (route) => {
    const response = await route.fetch();
    const headers = { ...response.headers() };
    if (!headers["content-security-policy"]) throw new Error("the gateway sent no policy");
    if (!keepPolicy) delete headers["content-security-policy"];
    delete headers["content-length"]; // the body grows
    const body = (await response.text()).replace(
      "<body>",
      "<body><script>document.documentElement.dataset.injected = 'html'</script>",
    );
    if (!body.includes("dataset.injected")) throw new Error("the page has no <body> to inject into");
    await route.fulfill({ response, headers, body });
  });
  await page.goto(baseUrl);
  // The app itself still starts: only the injected script is refused.
  await page.waitForSelector("body[data-screen=auth]");
  if (keepPolicy) await waitForViolations(errors, 1);
  const marker = await page.evaluate(() => document.documentElement.dataset.injected ?? null);
  await page.context().close();
  return { marker, errors };
}

/** Waits (on the events, not on time) until `count` violations were reported. */
async function waitForViolations(errors: string[], count: number): Promise<void> {
  const deadline = Date.now() + TIMEOUT;
  while (errors.filter((e) => e.startsWith("CSP violation")).length < count) {
    if (Date.now() > deadline) throw new Error(`expected ${count} policy violations, saw ${JSON.stringify(errors)}`);
    await new Promise((resolve) => setTimeout(resolve, 20)); // polling a list the page fills
  }
}

function violationDirectives(errors: string[]): string[] {
  return errors
    .filter((e) => e.startsWith("CSP violation: "))
    .map((e) => e.slice("CSP violation: ".length).split(" ")[0])
    .sort();
}

// ---------------------------------------------------------------- a malicious server

/** Fills the composer and sends; the send is refused (nothing sealed for what changed). */
/** The classes and texts of the conversation's items, in order (messages and notices). */
async function items(user: User): Promise<{ kind: string; text: string }[]> {
  return user.page.$$eval("#messages > li", (list) =>
    list.map((item) => ({ kind: item.className, text: item.textContent ?? "" })),
  );
}

/** A ghost device, key substitutions (under the old and the new fingerprint), a ghost member. */
async function attacks(): Promise<void> {
  step = "register";
  const [carol, dave, erin, mallory] = [unique("carol"), unique("dave"), unique("erin"), unique("mallory")];
  for (const name of [carol, dave, erin, mallory]) await ask("cli_user", { username: name });
  const alice = await newUser(unique("alice"));

  step = "alice writes to carol and verifies her";
  await openChatWith(alice, carol);
  await send(alice, "hello carol");
  await alice.page.click("#safety");
  await alice.page.click("#mark-verified");
  await alice.page.waitForSelector('#mark-verified:text-is("Verified ✓")');
  await alice.page.click("#panel button:text-is('Close')");

  step = "a ghost device of a verified contact: nothing is sealed for it until alice accepts it";
  const ghost = await ask<number>("ghost_device", { username: carol });
  // The server lies from now on: to this page once it asks again (here after a reload).
  await alice.page.reload();
  await online(alice.page);
  await alice.page.waitForSelector(`#messages .notice[data-kind=keys][data-blocked=true]:has-text("${carol}'s keys changed")`);
  await writeHeld(alice, "for carol's eyes only", carol);
  await alice.page.waitForSelector("#accept-keys:visible");
  expectEqual(await ask("attacker_reads", { attacker: ghost }), 0, "messages the ghost device reads");
  await screenshot(alice, "key-change-blocked");
  await alice.page.click("#accept-keys");
  await alice.page.waitForSelector("#accept-keys", { state: "hidden" });
  await sees(alice, "for carol's eyes only", true);
  expectEqual(await ask("attacker_reads", { attacker: ghost }), 1, "messages the accepted device reads");

  step = "a key substituted under the old fingerprint: nothing sealed for it (the message held) and shown";
  await openChatWith(alice, dave);
  await send(alice, "hello dave");
  const substituted = await ask<number>("substitute_key", { username: dave, old_fingerprint: true });
  await alice.page.reload();
  await online(alice.page);
  await alice.page.waitForSelector(`#title:text-is("${dave}")`);
  await writeHeld(alice, "for dave only", dave);
  await alice.page.waitForSelector(`#messages .notice[data-blocked=true]:has-text("${dave}'s keys changed")`);
  expectEqual(await ask("attacker_reads", { attacker: substituted }), 0, "messages the substituted key reads");

  step = "a key substituted under its new fingerprint: held and shown the same way";
  await openChatWith(alice, erin);
  await send(alice, "hello erin");
  const resubstituted = await ask<number>("substitute_key", { username: erin, old_fingerprint: false });
  await alice.page.reload();
  await online(alice.page);
  await alice.page.waitForSelector(`#title:text-is("${erin}")`);
  await writeHeld(alice, "for erin only", erin);
  await alice.page.waitForSelector(`#messages .notice[data-blocked=true]:has-text("${erin}'s keys changed")`);
  expectEqual(await ask("attacker_reads", { attacker: resubstituted }), 0, "messages the substituted key reads");

  step = "a ghost member: shown in the group before anything is sealed for it";
  const group = unique("club-");
  await alice.page.click("#new-group-box summary");
  await alice.page.fill("#new-group-name", group);
  await alice.page.fill("#new-group-members", carol);
  await alice.page.press("#new-group-members", "Enter");
  await alice.page.waitForSelector(`#title:text-is("# ${group}")`);
  await send(alice, "welcome");
  await ask("ghost_member", { as: mallory, username: mallory });
  await send(alice, "who is here?");
  const shown = await items(alice);
  const notice = shown.findIndex((item) => item.kind === "notice" && item.text.includes(`Added: ${mallory}`));
  const message = shown.findIndex((item) => item.text.includes("who is here?"));
  if (notice < 0 || notice > message) throw new Error(`the ghost member is not shown before the message: ${JSON.stringify(shown)}`);
  await screenshot(alice, "ghost-member");
  noConsoleErrors([alice]);
}

/** A replay after a reload is flagged; a revoked device's message stamped after its revocation,
 * and a message of another conversation, are refused. */
async function replays(): Promise<void> {
  step = "register";
  const [carol, dave] = [unique("carol"), unique("dave")];
  await ask("cli_user", { username: carol });
  await ask("cli_user", { username: dave });
  await ask("cli_new_device", { username: carol });
  const alice = await newUser(unique("alice"));
  await openChatWith(alice, carol);
  await ask("cli_send", { as: carol, to: alice.name, text: "pay 10 euros" });
  await sees(alice, "pay 10 euros");
  const conversationId = await alice.page.getAttribute("#messages", "data-conversation-id");

  step = "a replay after a reload";
  await ask("replay", { conversation_id: conversationId, sequence: 1 });
  await alice.page.reload();
  await online(alice.page);
  await alice.page.waitForSelector('#messages .message[data-seq="2"][data-status=replay]');
  await sees(alice, "pay 10 euros");
  expectEqual(await texts(alice).then((all) => all.filter((t) => t === "pay 10 euros").length), 1, "copies shown");
  await screenshot(alice, "replay");

  step = "a revoked device";
  await ask("cli_send", { as: carol, to: alice.name, text: "from the old device" });
  await sees(alice, "from the old device");
  await ask("cli_revoke", { as: `${carol}/new-device`, device_of: carol });
  await alice.page.waitForSelector(`#messages .notice:has-text("a device was removed")`);
  // The server stamps that device's message after its revocation, and its first one well before.
  expectEqual(await ask("stamp", { conversation_id: conversationId, sequence: 3, shift_seconds: 3600 }), 1, "stamped");
  expectEqual(await ask("stamp", { conversation_id: conversationId, sequence: 1, shift_seconds: -3600 }), 1, "stamped");
  await alice.page.reload();
  await online(alice.page);
  await alice.page.waitForSelector('#messages .message[data-seq="3"][data-status=failed]');
  await sees(alice, "pay 10 euros");

  step = "a message of another conversation";
  await ask("cli_send", { as: dave, to: alice.name, text: "for alice, from dave" });
  await alice.page.waitForSelector(`#conversations li[data-name="${dave}"]`);
  await ask("capture_history");
  await openConversation(alice, dave);
  await sees(alice, "for alice, from dave");
  await ask("inject_captured");
  await openConversation(alice, carol);
  await alice.page.waitForSelector("#messages .message[data-status=failed] >> nth=1");
  if ((await texts(alice)).includes("for alice, from dave")) throw new Error("dave's message is shown in carol's conversation");
  noConsoleErrors([alice]);
}

/** Logging out deletes the device's keys and refresh token unless the device is kept; keys
 * sealed under a passphrase are unlocked after a reload. */
async function keys(): Promise<void> {
  const stored = (page: Page) =>
    page.evaluate(
      () =>
        new Promise<Record<string, unknown>>((resolve, reject) => {
          const open = indexedDB.open("chat-web-demo", 1);
          open.onerror = () => reject(open.error);
          open.onsuccess = () => {
            const store = open.result.transaction("kv", "readonly").objectStore("kv");
            const all: Record<string, unknown> = {};
            const cursor = store.openCursor();
            cursor.onsuccess = () => {
              const at = cursor.result;
              if (!at) return resolve(all);
              all[String(at.key)] = at.value;
              at.continue();
            };
          };
        }),
    );

  step = "logging out without keeping the device deletes its keys";
  const alice = await newUser(unique("alice"));
  const first = await alice.page.getAttribute("body", "data-device");
  expectEqual(Object.keys(await stored(alice.page)).some((k) => k === `device:${alice.name}`), true, "keys while logged in");
  await alice.page.click("#logout");
  await alice.page.waitForSelector("body[data-screen=auth]");
  const left = Object.keys(await stored(alice.page));
  expectEqual(left.filter((k) => k.startsWith("device:") || k === "session" || k.includes(":")), [], "what stays after logout");
  expectEqual(await ask("active_devices", { username: alice.name }), 0, "alice's active devices after logout");
  await alice.page.fill("#username", alice.name);
  await alice.page.fill("#password", PASSWORD);
  await alice.page.click("#login");
  await alice.page.waitForSelector("body[data-screen=app]");
  if ((await alice.page.getAttribute("body", "data-device")) === first) throw new Error("the deleted device came back");

  step = "a kept device whose keys are sealed under a passphrase";
  const passphrase = "a passphrase, not the password";
  const bob = await newUser(unique("bob"), async (page) => {
    await page.fill("#device-passphrase", passphrase);
    await page.check("#keep-device");
  });
  const device = await bob.page.getAttribute("body", "data-device");
  const record = (await stored(bob.page))[`device:${bob.name}`] as { keys?: unknown; sealed?: { ciphertext: Uint8Array } };
  if (record.keys !== undefined || !record.sealed?.ciphertext?.length) throw new Error("the keys are stored unsealed");

  step = "a reload asks for the passphrase";
  await bob.page.reload();
  await bob.page.waitForSelector("body[data-screen=unlock]");
  await screenshot(bob, "unlock");
  await bob.page.fill("#unlock-passphrase", "not the passphrase");
  await bob.page.click("#unlock-button");
  await bob.page.waitForSelector('#unlock-status:has-text("wrong passphrase")');
  await bob.page.fill("#unlock-passphrase", passphrase);
  await bob.page.click("#unlock-button");
  await bob.page.waitForSelector("body[data-screen=app]");
  await online(bob.page);

  step = "logging out keeps the sealed keys; logging in needs the passphrase";
  await bob.page.click("#logout");
  await bob.page.waitForSelector("body[data-screen=auth]");
  await bob.page.fill("#username", bob.name);
  await bob.page.fill("#password", PASSWORD);
  await bob.page.click("#login");
  await bob.page.waitForSelector('#auth-status:has-text("locked")');
  await bob.page.fill("#device-passphrase", passphrase);
  await bob.page.click("#login");
  await bob.page.waitForSelector("body[data-screen=app]");
  expectEqual(await bob.page.getAttribute("body", "data-device"), device, "bob's device after logging in again");
  noConsoleErrors([alice, bob]);
}

/**
 * The page's e2ee code against the Rust crate's vectors in this Chromium: strict Ed25519 (small-order
 * and non-canonical keys, non-canonical S, identity R), the checks of recipients' RSA keys, the V1
 * and V2 negative cases, and honest envelopes (tests/e2ee-vectors.browser.ts, bundled for the
 * browser and run in a page of the app's origin, where WebCrypto is what the app gets).
 */
async function vectors(): Promise<void> {
  step = "bundle the vectors runner for the browser";
  const { build } = await import("esbuild");
  const built = await build({
    entryPoints: ["tests/e2ee-vectors.browser.ts"],
    bundle: true,
    format: "iife",
    platform: "browser",
    target: "es2022",
    write: false,
    logLevel: "warning",
  });
  const vectorsJson = JSON.parse(readFileSync(process.env.E2EE_VECTORS ?? "../e2ee/testdata/vectors.json", "utf8"));

  step = "run them in a page of the app's origin";
  const errors: string[] = [];
  // The runner is injected by the test, so past the page's policy; the app's own code runs under it.
  const context = await browser.newContext({ bypassCSP: true });
  const page = await context.newPage();
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.goto(baseUrl);
  await page.addScriptTag({ content: built.outputFiles[0].text });
  const { userAgent, secure, outcomes } = await page.evaluate(async (v) => {
    const run = (globalThis as unknown as { runE2eeVectors(v: unknown): Promise<VectorOutcome[]> }).runE2eeVectors;
    return { userAgent: navigator.userAgent, secure: window.isSecureContext, outcomes: await run(v) };
  }, vectorsJson);

  step = "every case as the vectors say";
  if (!userAgent.includes("Chrome") || !secure) throw new Error(`not a secure Chromium page: ${userAgent}, ${secure}`);
  const wrong = outcomes.filter((o) => o.actual !== o.expected);
  expectEqual(wrong, [], "cases whose outcome in Chromium differs from the vectors'");
  const count = (section: string) => outcomes.filter((o) => o.section === section).length;
  expectEqual(
    [count("signatures"), count("bad_recipient_keys"), count("negative")],
    [vectorsJson.signatures.length, vectorsJson.bad_recipient_keys.length, vectorsJson.negative.length],
    "cases run per section",
  );
  for (const name of ["identity-key-and-zero-signature", "order-8-key", "non-canonical-s", "mixed-order-r"]) {
    if (!outcomes.some((o) => o.section === "signatures" && o.name === name)) throw new Error(`no ${name} case`);
  }
  if (count("envelopes") === 0) throw new Error("no honest envelope opened");
  console.log(JSON.stringify({ chromium: userAgent, cases: outcomes.length }));
  expectEqual(errors, [], "page errors");
}

/** What chat stored as delivered to `user`'s device in the open conversation. */
async function delivered(user: User): Promise<number> {
  const conversationId = await user.page.getAttribute("#messages", "data-conversation-id");
  return ask<number>("delivered", { username: user.name, conversation_id: conversationId });
}

/**
 * RSA work and what the server sees: a message whose decryption is slow does not hold back the
 * acknowledgement of the next one; a sender device whose messages keep failing to decrypt is not
 * decrypted at all once its budget is used up (after a reload too), while others still open.
 */
async function decryption(): Promise<void> {
  step = "register";
  const carol = unique("carol");
  const mallory = unique("mallory");
  await ask("cli_user", { username: carol });
  await ask("cli_user", { username: mallory });
  const bob = await newUser(unique("bob"));
  await openChatWith(bob, carol);
  await ask("cli_send", { as: carol, to: bob.name, text: "one" });
  await sees(bob, "one");

  step = "RSA decryption takes 6 s in bob's page from now on";
  await bob.page.evaluate(() => {
    const subtle = crypto.subtle;
    const decrypt = subtle.decrypt.bind(subtle);
    subtle.decrypt = async (algorithm, key, data) => {
      if ((algorithm as { name?: string }).name === "RSA-OAEP") await new Promise((resolve) => setTimeout(resolve, 6000));
      return decrypt(algorithm, key, data);
    };
  });
  await ask("cli_send", { as: carol, to: bob.name, text: "slow to open" });
  await ask("cli_send", { as: carol, to: bob.name, text: "the next one" });

  step = "the next message is acknowledged while the slow one is still being opened";
  const deadline = Date.now() + 5000;
  while ((await delivered(bob)) < 3) {
    if (Date.now() > deadline) throw new Error("message 3 was not acknowledged within 5 s");
    await new Promise((resolve) => setTimeout(resolve, 50)); // polling the server, not waiting for time
  }
  const shownWhenAcknowledged = await texts(bob);
  if (shownWhenAcknowledged.includes("slow to open")) {
    throw new Error("message 3 was acknowledged only after message 2 was opened");
  }
  await sees(bob, "slow to open");
  await sees(bob, "the next one");
  expectEqual(await texts(bob), ["one", "slow to open", "the next one"], "bob's messages, in order");
  await bob.page.reload();
  await bob.page.waitForSelector("body[data-screen=app]");

  step = "a dishonest device sends 6 messages whose wrapped keys do not open, then an honest one";
  await online(bob.page);
  await ask("cli_send", { as: mallory, to: bob.name, text: "hello from mallory" });
  await bob.page.waitForSelector(`#conversations li[data-name="${mallory}"]`);
  await openConversation(bob, mallory);
  await sees(bob, "hello from mallory");
  await ask("cli_send_bad_wrapped_keys", { as: mallory, to: bob.name, count: 6 });
  await ask("cli_send", { as: mallory, to: bob.name, text: "an honest line after the bad ones" });
  await bob.page.waitForSelector('#messages .message[data-seq="8"]');
  const statuses = () =>
    bob.page.$$eval("#messages .message", (items) => items.map((item) => (item as HTMLElement).dataset.status));
  expectEqual(
    await statuses(),
    ["verified", ...Array(5).fill("failed"), "not-attempted", "not-attempted"],
    "five attempted, then none",
  );
  const said = (await texts(bob))[7];
  if (!said.includes("Too many messages from this sender's device failed to decrypt")) {
    throw new Error(`not said: ${said}`);
  }
  await screenshot(bob, "decryption-budget");

  step = "after a reload: still not attempted; another sender still opens";
  await bob.page.reload();
  await bob.page.waitForSelector("body[data-screen=app]");
  await online(bob.page);
  await openConversation(bob, mallory);
  await bob.page.waitForSelector('#messages .message[data-seq="8"]');
  expectEqual(await statuses(), Array(8).fill("not-attempted"), "mallory's messages after a reload");
  await ask("cli_send", { as: carol, to: bob.name, text: "carol still gets through" });
  await openConversation(bob, carol);
  await sees(bob, "carol still gets through");
  noConsoleErrors([bob]);
}

/**
 * One device in two tabs sends at once: the sends take turns (a Web Lock per device), so the
 * recipient sees one chain, with no false fork or gap.
 */
async function turns(): Promise<void> {
  step = "register";
  const carol = unique("carol");
  await ask("cli_user", { username: carol });
  const alice = await newUser(unique("alice"));
  await openChatWith(alice, carol);
  await send(alice, "first, from the first tab");
  const second = await alice.page.context().newPage();
  second.setDefaultTimeout(TIMEOUT);
  second.on("pageerror", (error) => alice.errors.push(String(error)));
  await second.goto(alice.page.url());
  await second.waitForSelector("body[data-screen=app]");
  await online(second);
  const tabs: User[] = [alice, { name: alice.name, page: second, errors: alice.errors }];
  await openConversation(tabs[1], carol);

  step = "both tabs send at once, three times";
  const lines: string[] = [];
  for (let round = 1; round <= 3; round++) {
    const both = tabs.map((tab, i) => `tab ${i + 1} line ${round}`);
    lines.push(...both);
    await Promise.all(tabs.map(async (tab, i) => {
      await tab.page.fill("#text", both[i]);
      await tab.page.press("#text", "Enter");
    }));
  }
  for (const [i, tab] of tabs.entries()) {
    for (const line of lines.filter((l) => l.startsWith(`tab ${i + 1}`))) await sees(tab, line, true);
  }

  step = "the CLI recipient sees every line, none flagged";
  const history = await cliSees(carol, alice.name, lines[lines.length - 1]);
  const last = await (async () => {
    for (const deadline = Date.now() + TIMEOUT; ; ) {
      const seen = await ask<CliMessage[]>("cli_history", { as: carol, to: alice.name });
      if (seen.length === 7 || Date.now() > deadline) return seen;
      await new Promise((resolve) => setTimeout(resolve, 100)); // polling the server
    }
  })();
  expectEqual(last.length, 7, `messages at carol's: ${JSON.stringify(history)}`);
  expectEqual(
    last.filter((m) => m.text === null || m.chain.length > 0),
    [],
    "messages carol's CLI flags",
  );
  noConsoleErrors([alice]);
}

/** The text of the conversation list, in order: [name, preview] per conversation. */
async function listed(user: User): Promise<string[][]> {
  return user.page.$$eval("#conversations li", (items) =>
    items.map((item) => [(item as HTMLElement).dataset.name ?? "", item.querySelector(".preview")?.textContent ?? ""]),
  );
}

async function previewIs(user: User, name: string, preview: string): Promise<void> {
  await user.page.waitForSelector(`#conversations li[data-name="${name}"] .preview:text-is(${JSON.stringify(preview)})`);
}

/** The list is in order of the newest message (not of message counts), with its time and a
 * preview opened here; a message that fails verification is a placeholder, never its text. */
async function recent(): Promise<void> {
  step = "register";
  const carol = unique("carol");
  const dave = unique("dave");
  await ask("cli_user", { username: carol });
  await ask("cli_user", { username: dave });
  const alice = await newUser(unique("alice"));

  step = "a long conversation";
  await openChatWith(alice, carol);
  await send(alice, "one");
  await send(alice, "two");
  await ask("cli_send", { as: carol, to: alice.name, text: "three" });
  await sees(alice, "three");
  await previewIs(alice, carol, `${carol}: three`);

  step = "a newer conversation with one message goes on top";
  await ask("cli_send", { as: dave, to: alice.name, text: "hello from dave,\nwho writes a message longer than a preview shows" });
  await previewIs(alice, dave, `${dave}: hello from dave, who writes a message longer than a preview…`);
  expectEqual((await listed(alice)).map(([name]) => name), [dave, carol], "the order after dave's message");
  const time = await alice.page.getAttribute(`#conversations li[data-name="${dave}"] time`, "datetime");
  if (!time || Math.abs(Date.parse(time) - Date.now()) > 120_000) throw new Error(`dave's time is ${time}`);

  step = "a newer message moves a conversation back up";
  await send(alice, "four, from alice");
  await previewIs(alice, carol, "you: four, from alice");
  expectEqual((await listed(alice)).map(([name]) => name), [carol, dave], "the order after alice's message");

  step = "after a reload the previews are opened from the history, and not marked read";
  await alice.page.reload();
  await alice.page.waitForSelector("body[data-screen=app]");
  await online(alice.page);
  await previewIs(alice, dave, `${dave}: hello from dave, who writes a message longer than a preview…`);
  await previewIs(alice, carol, "you: four, from alice");
  await alice.page.waitForSelector(`#conversations li[data-name="${dave}"] .unread:text-is("1")`);
  expectEqual((await listed(alice)).map(([name]) => name), [carol, dave], "the order after the reload");
  await screenshot(alice, "conversation-list-recent");

  step = "a message that fails verification is a placeholder";
  const daves = await alice.page.getAttribute(`#conversations li[data-name="${dave}"]`, "data-conversation-id");
  expectEqual(await ask("tamper", { conversation_id: daves, sequence: 1 }), 1, "altered rows");
  await alice.page.reload();
  await alice.page.waitForSelector("body[data-screen=app]");
  await alice.page.waitForSelector(`#conversations li[data-name="${dave}"] .preview[data-status="not-shown"]`);
  await previewIs(alice, carol, "you: four, from alice");
  const list = await alice.page.textContent("#conversations");
  if (list?.includes("hello from dave")) throw new Error(`the list shows a message that failed verification: ${list}`);
  await screenshot(alice, "conversation-list-placeholder");

  step = "an empty message is not sent";
  const before = (await texts(alice)).length;
  await alice.page.fill("#text", "   ");
  await alice.page.press("#text", "Enter");
  await send(alice, "five");
  expectEqual((await texts(alice)).length, before + 1, "messages after an empty one and five");
  noConsoleErrors([alice]);
}


// ---------------------------------------------------------------- groups, errors, devices

const ERROR_COLOUR = "rgb(179, 38, 30)"; // --bad in style.css

/** Waits for an error in the status line `id` holding `text`, and checks it reads as one. */
async function errorIn(user: User, id: string, text: string): Promise<void> {
  await user.page.waitForSelector(`#${id}[data-kind="error"]:visible:has-text(${JSON.stringify(text)})`);
  expectEqual(await user.page.$eval(`#${id}`, (e) => getComputedStyle(e).color), ERROR_COLOUR, `the colour of #${id}`);
}

/** The members panel of the open group, as [username, role] pairs. */
async function memberRoles(user: User): Promise<[string, string][]> {
  return user.page.$$eval("#member-list li", (items) =>
    items.map((item) => [(item as HTMLElement).dataset.username ?? "", (item as HTMLElement).dataset.role ?? ""] as [string, string]),
  );
}

/** What the members panel offers: removable members, members whose role can change, the forms and buttons. */
async function offered(user: User): Promise<Record<string, unknown>> {
  return user.page.$eval("#panel", (panel) => ({
    remove: [...panel.querySelectorAll("#member-list li")]
      .filter((li) => [...li.querySelectorAll("button")].some((b) => b.textContent === "Remove"))
      .map((li) => (li as HTMLElement).dataset.username)
      .sort(),
    roles: [...panel.querySelectorAll("#member-list li select")].map((s) => (s.closest("li") as HTMLElement).dataset.username).sort(),
    add: !!panel.querySelector("#member-add"),
    rename: !!panel.querySelector("#group-rename"),
    leave: !!panel.querySelector("#leave-group"),
    delete: !!panel.querySelector("#delete-group"),
  }));
}

async function openMembers(user: User): Promise<void> {
  await user.page.click("#members");
  await user.page.waitForSelector("#member-list li");
}

/** Roles in the members panel, only the actions a role allows, rename, role changes, removal,
 * leaving and deleting, and two groups of the same name told apart. */
async function groups(): Promise<void> {
  step = "register";
  const carol = unique("carol");
  await ask("cli_user", { username: carol });
  const alice = await newUser(unique("alice"));
  const bob = await newUser(unique("bob"));
  const team = unique("team-");

  step = "alice creates a group";
  await alice.page.click("#new-group-box summary");
  await alice.page.fill("#new-group-name", team);
  await alice.page.fill("#new-group-members", `${bob.name}, ${carol}`);
  await alice.page.press("#new-group-members", "Enter");
  await alice.page.waitForSelector(`#title:text-is("# ${team}")`);
  await send(alice, "welcome");
  const groupId = (await alice.page.getAttribute("#messages", "data-conversation-id"))!;

  step = "a plain member sees the roles and is offered leaving only";
  await bob.page.waitForSelector(`#conversations li[data-name="# ${team}"]`);
  await openConversation(bob, `# ${team}`);
  await openMembers(bob);
  expectEqual(
    (await memberRoles(bob)).sort(),
    [[alice.name, "owner"], [bob.name, "member"], [carol, "member"]].sort(),
    "the roles bob sees",
  );
  expectEqual(await offered(bob), { remove: [], roles: [], add: false, rename: false, leave: true, delete: false }, "what a member is offered");
  await screenshot(bob, "group-member");

  step = "the owner is offered everything but leaving (the only owner)";
  await openMembers(alice);
  expectEqual(
    await offered(alice),
    { remove: [bob.name, carol].sort(), roles: [bob.name, carol].sort(), add: true, rename: true, leave: false, delete: true },
    "what the only owner is offered",
  );
  await alice.page.waitForSelector('#panel .hint:has-text("only owner")');
  await screenshot(alice, "group-owner");

  step = "the owner makes bob an admin: his panel follows";
  await alice.page.selectOption(`#member-list li[data-username="${bob.name}"] select`, { label: "admin" });
  await alice.page.waitForSelector(`#member-list li[data-username="${bob.name}"][data-role="admin"]`);
  await bob.page.waitForSelector(`#member-list li[data-username="${bob.name}"][data-role="admin"]`);
  expectEqual(await offered(bob), { remove: [carol], roles: [], add: true, rename: true, leave: true, delete: false }, "what an admin is offered");

  step = "an error of the panel shows in the panel, and goes with the next change that succeeds";
  const nobody = unique("nobody");
  await bob.page.fill('#member-add input', nobody);
  await bob.page.press('#member-add input', "Enter");
  await errorIn(bob, "panel-status", nobody);
  expectEqual(await bob.page.textContent("#sidebar-status"), "", "the sidebar's status");
  expectEqual(await bob.page.textContent("#conversation-status"), "", "the conversation's status");
  await screenshot(bob, "panel-error");
  const renamed = `${team}-renamed`;
  await bob.page.fill("#group-rename input", renamed);
  await bob.page.press("#group-rename input", "Enter");
  await bob.page.waitForSelector(`#title:text-is("# ${renamed}")`);
  await bob.page.waitForSelector("#panel-status:empty", { state: "attached" });

  step = "the rename reaches the owner's page";
  await alice.page.waitForSelector(`#conversations li[data-name="# ${renamed}"]`);
  await alice.page.waitForSelector(`#title:text-is("# ${renamed}")`);

  step = "the admin removes the CLI member";
  await bob.page.click(`#member-list li[data-username="${carol}"] button:text-is("Remove")`);
  await bob.page.waitForSelector(`#member-list:not(:has(li[data-username="${carol}"]))`);
  await alice.page.waitForSelector(`#member-list:not(:has(li[data-username="${carol}"]))`);

  step = "a second group of the same name is told apart";
  await alice.page.click("#panel button:text-is('Close')");
  await alice.page.click("#new-group-box summary");
  await alice.page.fill("#new-group-name", renamed);
  await alice.page.fill("#new-group-members", bob.name);
  await alice.page.press("#new-group-members", "Enter");
  await alice.page.waitForFunction((name) => document.querySelectorAll(`#conversations li[data-name="# ${name}"]`).length === 2, renamed);
  await alice.page.waitForSelector(`#messages:not([data-conversation-id="${groupId}"])`, { state: "attached" });
  const second = (await alice.page.getAttribute("#messages", "data-conversation-id"))!;
  const tags = await alice.page.$$eval(`#conversations li[data-name="# ${renamed}"]`, (items) =>
    items.map((item) => [(item as HTMLElement).dataset.conversationId, item.querySelector(".tag")?.textContent ?? ""]),
  );
  expectEqual(
    tags.sort(),
    [
      [groupId, `2 members · …${groupId.slice(-6)}`],
      [second, `2 members · …${second.slice(-6)}`],
    ].sort(),
    "the tags of two groups of one name",
  );
  await alice.page.waitForSelector(`#title-tag:text-is("2 members · …${second.slice(-6)}")`);
  await bob.page.waitForFunction((name) => document.querySelectorAll(`#conversations li[data-name="# ${name}"] .tag`).length === 2, renamed);
  await screenshot(alice, "group-duplicates");

  step = "bob leaves the second group";
  await bob.page.click(`#conversations li[data-conversation-id="${second}"]`);
  await bob.page.waitForSelector(`#messages[data-conversation-id="${second}"]`);
  await openMembers(bob);
  await bob.page.click("#leave-group");
  await bob.page.click("#leave-group[data-armed=true]");
  await bob.page.waitForSelector(`#conversations:not(:has(li[data-conversation-id="${second}"]))`);
  await bob.page.waitForSelector("#conversation", { state: "hidden" });
  await bob.page.waitForSelector(`#sidebar-status:has-text("You left")`);

  step = "the owner deletes the first group; bob, who has it open, sees it go";
  await openConversation(bob, `# ${renamed}`);
  await alice.page.click(`#conversations li[data-conversation-id="${groupId}"]`);
  await alice.page.waitForSelector(`#messages[data-conversation-id="${groupId}"]`);
  await openMembers(alice);
  await alice.page.click("#delete-group");
  await alice.page.click("#delete-group[data-armed=true]");
  await alice.page.waitForSelector(`#conversations:not(:has(li[data-conversation-id="${groupId}"]))`);
  await bob.page.waitForSelector(`#conversations:not(:has(li[data-conversation-id="${groupId}"]))`);
  await bob.page.waitForSelector("#conversation", { state: "hidden" });
  await bob.page.waitForSelector(`#sidebar-status:has-text("no longer available")`);
  expectEqual(await bob.page.getAttribute("#sidebar-status", "data-kind"), null, "the kind of a notice that is no error");
  noConsoleErrors([alice, bob]);
}

/** Each panel's error in that panel, in the error colour, cleared by the next success; the
 * connection indicator follows the network (Playwright's offline emulation). */
async function errors(): Promise<void> {
  step = "a login that fails says so in the login form, in the error colour";
  const carol = unique("carol");
  await ask("cli_user", { username: carol });
  const alice = await newUser(unique("alice"), async (page) => {
    await page.click("#login"); // the account does not exist yet
    await page.waitForSelector('#auth-status[data-kind="error"]');
    expectEqual(await page.$eval("#auth-status", (e) => getComputedStyle(e).color), ERROR_COLOUR, "the colour of the login error");
  });
  // The refused login may be logged by Chromium as a failed request; nothing else may be.
  for (let i = alice.errors.length - 1; i >= 0; i--) {
    if (/Failed to load resource/.test(alice.errors[i])) alice.errors.splice(i, 1);
  }

  step = "the sidebar's error in the sidebar, cleared by the next chat opened";
  const nobody = unique("nobody");
  await alice.page.fill("#new-chat-name", nobody);
  await alice.page.press("#new-chat-name", "Enter");
  await errorIn(alice, "sidebar-status", nobody);
  await screenshot(alice, "sidebar-error");
  await openChatWith(alice, carol);
  await alice.page.waitForSelector("#sidebar-status:empty", { state: "attached" });
  await send(alice, "hello carol");

  step = "the network goes away: offline at once";
  await alice.page.context().setOffline(true);
  await alice.page.waitForSelector('#conn[data-state="offline"]:has-text("no network")');

  step = "a send without a network is pending, in the conversation, and no error anywhere";
  await alice.page.fill("#text", "sent while offline");
  await alice.page.press("#text", "Enter");
  await alice.page.waitForSelector('#messages .message[data-status=pending] .body:text-is("sent while offline")');
  expectEqual(await alice.page.textContent("#sidebar-status"), "", "the sidebar's status");
  expectEqual(await alice.page.textContent("#conversation-status"), "", "the conversation's status");
  expectEqual(await alice.page.inputValue("#text"), "", "the composer once the message is queued");
  await screenshot(alice, "offline-send-pending");

  step = "the network comes back: online, and the pending message goes";
  await alice.page.context().setOffline(false);
  await online(alice.page);
  await ask("cli_send", { as: carol, to: alice.name, text: "you are back" });
  await sees(alice, "you are back");
  await sees(alice, "sent while offline", true);
  await alice.page.waitForSelector("#messages:not(:has(.message.unsent))", { state: "attached" });
  await cliSees(carol, alice.name, "sent while offline");
  noConsoleErrors([alice], [/ERR_INTERNET_DISCONNECTED|Failed to fetch/]);
}

/**
 * The devices screen: the user's devices named after the browser, one renamed (a refused name
 * said in the screen), one revoked from another. The second browser logs in with the username in
 * capitals: usernames compare case-insensitively and show as registered.
 */
async function devices(): Promise<void> {
  step = "register, then log in on a second browser, the username in capitals";
  const alice = await newUser(unique("alice"));
  const errors: string[] = [];
  const other = await newPage(errors);
  await other.goto(baseUrl);
  await other.waitForSelector("body[data-screen=auth]");
  await other.fill("#username", alice.name.toUpperCase());
  await other.fill("#password", PASSWORD);
  await other.click("#login");
  await other.waitForSelector("body[data-screen=app]");
  await online(other);
  expectEqual(await other.getAttribute("body", "data-user"), alice.name, "the name shown, as registered");
  const otherDevice = (await other.getAttribute("body", "data-device"))!;
  const thisDevice = (await alice.page.getAttribute("body", "data-device"))!;

  step = "the devices screen lists both, named after the browser";
  await alice.page.click("#devices");
  await alice.page.waitForSelector(`#device-list li[data-device-id="${otherDevice}"]`);
  const listed = await alice.page.$$eval("#device-list li", (items) =>
    items.map((item) => ({
      id: (item as HTMLElement).dataset.deviceId,
      current: (item as HTMLElement).dataset.current,
      name: item.querySelector(".device-name")?.textContent,
      rename: !!item.querySelector('button[aria-label^="Rename"]'),
      revoke: !!item.querySelector('button[aria-label^="Revoke"]'),
    })),
  );
  expectEqual(
    listed,
    [
      { id: thisDevice, current: "true", name: "Chromium on Linux", rename: true, revoke: false },
      { id: otherDevice, current: "false", name: "Chromium on Linux", rename: true, revoke: true },
    ],
    "alice's devices",
  );

  step = "renaming the other device: trimmed, and the other browser is told the new name by the server";
  const otherItem = `#device-list li[data-device-id="${otherDevice}"]`;
  await alice.page.click(`${otherItem} button[aria-label^="Rename"]`);
  await alice.page.fill(`${otherItem} .rename-device input`, "  Work laptop ");
  await alice.page.press(`${otherItem} .rename-device input`, "Enter");
  await alice.page.waitForSelector(`${otherItem} .device-name:text-is("Work laptop")`);
  await alice.page.waitForSelector('#devices-status:text-is("Renamed to Work laptop.")');
  await screenshot(alice, "devices");
  await other.click("#devices");
  await other.waitForSelector(`${otherItem} .device-name:text-is("Work laptop")`);

  step = "an empty name is refused in the devices screen, in the error colour; Cancel keeps the old name";
  const thisItem = `#device-list li[data-device-id="${thisDevice}"]`;
  await alice.page.click(`${thisItem} button[aria-label^="Rename"]`);
  await alice.page.fill(`${thisItem} .rename-device input`, "   ");
  await alice.page.click(`${thisItem} .rename-device button[type=submit]`);
  await alice.page.waitForSelector('#devices-status[data-kind=error]:text-is("device name must not be empty")');
  await alice.page.click(`${thisItem} .rename-device button:text-is("Cancel")`);
  await alice.page.waitForSelector(`${thisItem} .device-name:text-is("Chromium on Linux")`);

  step = "revoking the other device logs it out";
  await alice.page.click(`${otherItem} button[aria-label^="Revoke"]`);
  await alice.page.click(`${otherItem} button[data-armed=true]`);
  await alice.page.waitForSelector(`#device-list:not(:has(li[data-device-id="${otherDevice}"]))`);
  await alice.page.waitForSelector('#devices-status:has-text("Work laptop was revoked")');
  expectEqual(await ask("active_devices", { username: alice.name }), 1, "alice's active devices after the revocation");
  await other.waitForSelector("body[data-screen=auth]");

  step = "on a phone, the devices screen takes the whole screen and closes back to the list";
  await alice.page.setViewportSize({ width: 390, height: 844 });
  await alice.page.waitForSelector("#device-list li:visible");
  if (await alice.page.isVisible("#conversations")) throw new Error("the list shows beside the devices on a phone");
  await alice.page.click("#devices-close");
  await alice.page.waitForSelector("#new-chat-name:visible");
  noConsoleErrors([alice]);
  // The revoked browser's refused calls may be logged as failed requests; nothing else may be.
  expectEqual(errors.filter((e) => !/Failed to load resource/.test(e)), [], "errors of the revoked browser");
}

/** `name` logs in on a new browser: a new device, with keys of its own. */
async function newDevice(name: string): Promise<User> {
  const errors: string[] = [];
  const page = await newPage(errors);
  await page.goto(baseUrl);
  await page.waitForSelector("body[data-screen=auth]");
  await page.fill("#username", name);
  await page.fill("#password", PASSWORD);
  await page.click("#login");
  await page.waitForSelector("body[data-screen=app]", { timeout: 60_000 });
  await online(page);
  return { name, page, errors };
}

/** The explanations of messages this device cannot read, in order, among the conversation's items. */
async function unreadableNotices(user: User): Promise<{ seq: string; count: string; before: string; text: string }[]> {
  return user.page.$$eval("#messages > li.unreadable", (list) =>
    list.map((item) => {
      const data = (item as HTMLElement).dataset;
      return { seq: data.seq ?? "", count: data.count ?? "", before: data.beforeThisDevice ?? "", text: item.textContent ?? "" };
    }),
  );
}

/** A new device opens a conversation whose earlier messages were not encrypted for it: it says
 * how many and why, in the CLI's words, in their place; later messages follow it. No other device
 * of the user runs meanwhile (alice's first device is a CLI profile), so none forwards the keys;
 * once it runs, it does, and the explanation gives way to the messages in the open conversation,
 * without a reload. */
async function newDeviceHistory(): Promise<void> {
  step = "bob (CLI) writes to alice's only device (a CLI profile, not running)";
  const alice = unique("alice");
  const bob = unique("bob");
  await ask("cli_user", { username: alice });
  await ask("cli_user", { username: bob });
  await ask("cli_send_many", { as: bob, to: alice, prefix: "before your new device", count: 3 });

  step = "alice's new device (this browser) opens the conversation";
  const laptop = await newDevice(alice);
  await laptop.page.waitForSelector(`#conversations li[data-name="${bob}"]`);
  await openConversation(laptop, bob);
  const earlier = "3 earlier messages were sent before this device existed and cannot be read here (they were not encrypted for it)";
  await laptop.page.waitForSelector(`#messages .notice.unreadable:text-is("${earlier}")`);
  expectEqual(await unreadableNotices(laptop), [{ seq: "1", count: "3", before: "true", text: earlier }], "the explanation");
  expectEqual(await texts(laptop), [], "the messages shown");

  step = "a message sent after the new device existed follows the explanation";
  await ask("cli_send", { as: bob, to: alice, text: "after your new device" });
  await sees(laptop, "after your new device");
  const shown = (await items(laptop)).filter((item) => !item.kind.includes("members") && !item.text.includes("keys"));
  expectEqual(
    shown.map((item) => item.kind),
    ["notice unreadable", "message"],
    `the conversation's items ${JSON.stringify(await items(laptop))}`,
  );
  await screenshot(laptop, "unreadable-new-device");

  step = "after a reload, still explained";
  await laptop.page.reload();
  await laptop.page.waitForSelector(`#messages .notice.unreadable:text-is("${earlier}")`);
  await sees(laptop, "after your new device");

  step = "the old device reads everything and forwards the keys; the new one then reads them too";
  const history = await ask<CliMessage[]>("cli_history", { as: alice, to: bob });
  expectEqual(
    history.map((m) => m.text),
    ["before your new device 1", "before your new device 2", "before your new device 3", "after your new device"],
    "the old device's history",
  );
  const forwarded = await ask<{ keys: number; devices: number }>("cli_forward_keys", { as: alice });
  expectEqual([forwarded.keys, forwarded.devices], [3, 1], "keys and devices the old device forwarded to");

  step = "the open conversation shows them at once, without a reload (the stream's keysForwarded)";
  await sees(laptop, "before your new device 3");
  expectEqual(
    await texts(laptop),
    ["before your new device 1", "before your new device 2", "before your new device 3", "after your new device"],
    "the messages shown, in order",
  );
  expectEqual(await unreadableNotices(laptop), [], "the new device's explanations once the keys were forwarded");

  step = "a third device (a tablet) while the CLI does not run: the laptop forwards what it was forwarded";
  const tablet = await newDevice(alice);
  await tablet.page.waitForSelector(`#conversations li[data-name="${bob}"]`);
  await openConversation(tablet, bob);
  await sees(tablet, "before your new device 3");
  await sees(tablet, "after your new device");
  expectEqual(
    await texts(tablet),
    ["before your new device 1", "before your new device 2", "before your new device 3", "after your new device"],
    "the tablet's messages, in order",
  );
  expectEqual(await unreadableNotices(tablet), [], "the tablet's explanations once the laptop forwarded");
  // Devices by creation: 0 the CLI, 1 the laptop, 2 the tablet. The CLI forwarded only to the
  // laptop (it did not run since); the laptop forwarded the three keys it was forwarded and the
  // one of the message sealed for it.
  expectEqual(
    await ask("forwarded_keys", { username: alice }),
    [
      { forwarder: 0, keys: 3, recipient: 1 },
      { forwarder: 1, keys: 4, recipient: 2 },
    ],
    "forwarded keys by forwarder and recipient (keys in the order serde_json writes them)",
  );

  step = "a new CLI device reads the keys the pages forward to it, which they were forwarded themselves";
  await ask("cli_new_device", { username: alice });
  // Only the two pages forward to it (the first CLI device does not run): the first three keys
  // reach it only from devices that were forwarded them.
  let read: (string | null)[] = [];
  for (let attempt = 0; attempt < 300; attempt++) {
    read = (await ask<CliMessage[]>("cli_history", { as: `${alice}/new-device`, to: bob })).map((m) => m.text);
    if (read.length === 4 && read.every((text) => text !== null)) break;
    await new Promise((resolve) => setTimeout(resolve, 100)); // polling the server, not waiting for time
  }
  expectEqual(
    read,
    ["before your new device 1", "before your new device 2", "before your new device 3", "after your new device"],
    "the new CLI device's history",
  );
  const toCli = (await ask<{ forwarder: number; recipient: number; keys: number }[]>("forwarded_keys", { username: alice })).filter(
    (row) => row.recipient === 3,
  );
  if (toCli.length === 0 || toCli.some((row) => row.forwarder !== 1 && row.forwarder !== 2)) {
    throw new Error(`keys forwarded to the new CLI device: ${JSON.stringify(toCli)}`);
  }
  noConsoleErrors([laptop, tablet]);
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the `chat` binary once on a CLI user's profile. */
async function chatRun(as: string, ...args: string[]): Promise<Run> {
  return ask<Run>("binary_run", { as, args });
}

/** Waits until the `chat` command running as `name` printed `text` (on stdout or stderr) `times` times. */
async function printed(name: string, text: string, times = 1): Promise<Run> {
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const output = await ask<Run>("binary_output", { name });
    if ((output.stdout + output.stderr).split(text).length - 1 >= times) return output;
    if (Date.now() > deadline) throw new Error(`${name} never printed "${text}" ${times} time(s): ${JSON.stringify(output)}`);
    await new Promise((resolve) => setTimeout(resolve, 100)); // polling a process's output, not waiting for time
  }
}

/** Writes a message in the page while the server cannot take it: shown pending, never failed. */
async function writePending(user: User, text: string): Promise<void> {
  await user.page.fill("#text", text);
  await user.page.press("#text", "Enter");
  await user.page.waitForSelector(`#messages .message[data-status=pending] .body:text-is("${text}")`);
}

/**
 * No message typed is lost (issue 22 §5): alice in the page, bob in `chat chat` (lines on its
 * stdin) and carol with `chat send` write while PostgreSQL restarts, then while the gateway
 * restarts. Meanwhile each shows its messages pending, none failed; afterwards each is delivered
 * exactly once.
 */
async function restarts(): Promise<void> {
  step = "alice (page) with bob (chat chat) and carol (chat send)";
  const [bob, carol] = [unique("bob"), unique("carol")];
  await ask("cli_user", { username: bob });
  await ask("cli_user", { username: carol });
  const alice = await newUser(unique("alice"));
  await openChatWith(alice, carol);
  await openChatWith(alice, bob);
  await ask("binary_start", { name: "bob's chat", as: bob, args: ["chat", alice.name] });
  await send(alice, "page: before");
  await ask("binary_type", { name: "bob's chat", text: "bob: before" });
  await sees(alice, "bob: before");
  await printed("bob's chat", `${alice.name}: page: before`);
  const sentBefore = await chatRun(carol, "send", alice.name, "carol: before");
  expectEqual(sentBefore.code, 0, `chat send before the restarts: ${sentBefore.stderr}`);

  const fromPage: string[] = ["page: before"];
  const fromBob: string[] = ["bob: before"];
  const fromCarol: string[] = ["carol: before"];
  for (const [fault, stop, start] of [
    ["postgres", "postgres_stop", "postgres_start"],
    ["gateway", "gateway_stop", "gateway_start"],
  ]) {
    step = `${fault} stopped: what each client writes is pending`;
    await ask(stop);
    const [page, line, sent] = [`page: during ${fault}`, `bob: during ${fault}`, `carol: during ${fault}`];
    await writePending(alice, page);
    fromPage.push(page);
    const pendingBefore = (await ask<Run>("binary_output", { name: "bob's chat" })).stderr.split("pending").length - 1;
    await ask("binary_type", { name: "bob's chat", text: line });
    fromBob.push(line);
    await printed("bob's chat", "pending", pendingBefore + 1);
    await ask("binary_start", { name: "carol's send", as: carol, args: ["send", alice.name, sent] });
    fromCarol.push(sent);
    await printed("carol's send", "… pending");
    if (await alice.page.$("#messages .message[data-status=not-sent]")) throw new Error(`the page shows a message failed while ${fault} is down`);
    const output = await ask<Run>("binary_output", { name: "bob's chat" });
    if (output.stderr.includes("not sent")) throw new Error(`chat chat says a line was not sent: ${output.stderr}`);
    if (fault === "postgres") await screenshot(alice, "pending-postgres-down");

    step = `${fault} started: each message delivered`;
    await ask(start);
    await sees(alice, page, true);
    await sees(alice, line);
    await printed("bob's chat", `${alice.name}: ${page}`);
    const carolSent = await ask<Run>("binary_end", { name: "carol's send" });
    expectEqual(carolSent.code, 0, `chat send once ${fault} is back: ${carolSent.stderr}`);
    const pending = await chatRun(carol, "--json", "pending");
    expectEqual(JSON.parse(pending.stdout), [], `carol's kept messages: ${pending.stdout}`);
  }

  step = "every message typed delivered exactly once";
  await alice.page.waitForSelector("#messages:not(:has(.message.unsent))", { state: "attached" });
  expectEqual([...(await texts(alice))].sort(), [...fromPage, ...fromBob].sort(), "alice's conversation with bob (sorted)");
  const left = await ask<Run>("binary_end", { name: "bob's chat" });
  expectEqual(left.code, 0, `chat chat's exit: ${left.stderr}`);
  const shownToBob = left.stdout.split("\n").filter((line) => line.includes(`${alice.name}: page:`));
  expectEqual(shownToBob.map((line) => line.split(`${alice.name}: `)[1]), fromPage, `what bob's chat chat showed: ${left.stdout}`);
  if (/not sent|FAILED/.test(left.stderr + left.stdout)) throw new Error(`chat chat reported a failure: ${left.stderr}`);
  const bobsHistory = await chatRun(bob, "--json", "history", alice.name);
  const bobsTexts = (JSON.parse(bobsHistory.stdout) as { content?: { text?: string } }[]).map((m) => m.content?.text ?? "");
  expectEqual([...bobsTexts].sort(), [...fromPage, ...fromBob].sort(), "bob's history with alice (sorted)");
  await openConversation(alice, carol);
  for (const text of fromCarol) await sees(alice, text);
  expectEqual(await texts(alice), fromCarol, "alice's conversation with carol");
  expectEqual(await ask("stored_messages"), fromPage.length + fromBob.length + fromCarol.length, "messages chat stored");
  // Chromium logs the calls refused while PostgreSQL or the gateway was down; nothing else may appear.
  noConsoleErrors([alice], [
    /Failed to load resource|ERR_CONNECTION_REFUSED|Failed to fetch|ERR_EMPTY_RESPONSE|ERR_CONNECTION_RESET|ERR_INCOMPLETE_CHUNKED_ENCODING/,
  ]);
}

/**
 * History on a new device: the CLI forwards the keys of earlier messages to a fresh browser, and a
 * browser forwards them to a new CLI device of its user.
 */
async function forwarding(): Promise<void> {
  step = "a CLI user and a browser user talk";
  const carol = unique("carol");
  await ask("cli_user", { username: carol });
  const bob = await newUser(unique("bob"));
  await openChatWith(bob, carol);
  await send(bob, "before your browser existed");
  await ask("cli_send", { as: carol, to: bob.name, text: "sent from my CLI" });
  await sees(bob, "sent from my CLI");

  step = "the CLI user logs in on a fresh browser: earlier messages were not encrypted for it";
  const errors: string[] = [];
  const page = await newPage(errors);
  await page.goto(baseUrl);
  await page.waitForSelector("body[data-screen=auth]");
  await page.fill("#username", carol);
  await page.fill("#password", PASSWORD);
  await page.click("#login");
  await page.waitForSelector("body[data-screen=app]", { timeout: 60_000 });
  await online(page);
  const fresh: User = { name: carol, page, errors };
  await page.waitForSelector(`#conversations li[data-name="${bob.name}"]`);
  await openConversation(fresh, bob.name);
  expectEqual(await page.$$eval("#messages .message[data-status=verified]", (m) => m.length), 0, "verified before");

  step = "the CLI device forwards the keys; the browser shows every earlier message, verified";
  const forwarded = await ask<{ keys: number; devices: number }>("cli_forward_keys", { as: carol });
  expectEqual([forwarded.keys, forwarded.devices], [2, 1], "keys and devices the CLI forwarded to");
  await page.reload();
  await page.waitForSelector("body[data-screen=app]", { timeout: 60_000 });
  await openConversation(fresh, bob.name);
  await sees(fresh, "before your browser existed");
  await sees(fresh, "sent from my CLI", true);

  step = "and back: the browser user logs in on the CLI; the browser forwards on its own";
  await ask("cli_new_device", { username: bob.name });
  const cliSide = `${bob.name}/new-device`;
  let shown: (string | null)[] = [];
  for (let attempt = 0; attempt < 100; attempt++) {
    const history = await ask<CliMessage[]>("cli_history", { as: cliSide, to: carol });
    shown = history.map((m) => m.text);
    if (shown.length === 2 && shown.every((text) => text !== null)) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  expectEqual(shown, ["before your browser existed", "sent from my CLI"], "the new CLI device's history");
  noConsoleErrors([bob, fresh]);
}

const scenarios: Record<string, () => Promise<void>> = {
  direct,
  vectors,
  decryption,
  turns,
  attacks,
  replays,
  keys,
  cli,
  reload,
  restart,
  outbox,
  lostanswer: lostAnswer,
  history: longHistory,
  recent,
  tokens,
  policy,
  groups,
  errors,
  devices,
  newdevice: newDeviceHistory,
  restarts,
  forwarding,
};

async function main(): Promise<void> {
  const run = scenarios[scenario];
  if (!run || !baseUrl) {
    console.error(`usage: browser.mjs <${Object.keys(scenarios).join("|")}> <gateway URL>`);
    process.exit(2);
  }
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const started = Date.now();
  try {
    await run();
    console.log(JSON.stringify({ ok: true, scenario, ms: Date.now() - started }));
  } catch (error) {
    console.log(JSON.stringify({ ok: false, scenario, step, error: String(error) }));
    process.exitCode = 1;
  } finally {
    await browser.close();
    process.stdin.destroy();
  }
}

void main();
