// A real gRPC-Web client: Node's fetch under @connectrpc/connect-web's gRPC-Web transport,
// talking to the gateway with the generated code the browser demo uses. It makes unary and
// server-streaming calls and checks their answers; gateway/tests/api/grpc_web_client.rs bundles
// it with esbuild and runs it against the gateway in front of real auth, real group and a chat
// double (which answers Subscribe with one typing event per position, then stays open).
//
//   node grpc-web-client.mjs <gateway base URL> [--username NAME] [--timeout-ms MS]
//
// The base URL may also come from GATEWAY_URL. Prints one JSON line (`"ok": true` and what was
// checked) and exits 0, or prints `"ok": false` with the failed step and exits 1 (2 on bad usage).

import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { AuthService } from "../src/gen/auth/v1/auth_pb";
import { ChatService } from "../src/gen/chat/v1/chat_pb";

const PASSWORD = "correct horse battery staple";
const CONVERSATIONS = ["c1", "c2", "c3"];

interface Options {
  baseUrl: string;
  username: string;
  timeoutMs: number;
}

class UsageError extends Error {}

/** A failed check, named after the step it belongs to. */
class CheckFailed extends Error {
  constructor(
    readonly step: string,
    message: string,
  ) {
    super(message);
  }
}

function parseArgs(argv: string[]): Options {
  let baseUrl = process.env.GATEWAY_URL ?? "";
  let username = `web-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  let timeoutMs = 10_000;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      const next = argv[++i];
      if (next === undefined) throw new UsageError(`${arg} needs a value`);
      return next;
    };
    if (arg === "--username") username = value();
    else if (arg === "--timeout-ms") timeoutMs = Number(value());
    else if (arg.startsWith("-")) throw new UsageError(`unknown option ${arg}`);
    else baseUrl = arg;
  }
  if (!/^https?:\/\/[^/]+/.test(baseUrl)) {
    throw new UsageError(`a gateway base URL like http://127.0.0.1:8080 is required, got "${baseUrl}"`);
  }
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new UsageError("--timeout-ms must be a positive number");
  return { baseUrl: baseUrl.replace(/\/+$/, ""), username, timeoutMs };
}

/** Runs `action` as step `step`: any error it throws becomes a CheckFailed naming the step. */
async function step<T>(name: string, action: () => Promise<T>): Promise<T> {
  try {
    return await action();
  } catch (error) {
    if (error instanceof CheckFailed) throw error;
    throw new CheckFailed(name, describe(error));
  }
}

function check(condition: boolean, step: string, message: string): asserts condition {
  if (!condition) throw new CheckFailed(step, message);
}

/** The error and its causes, e.g. "ConnectError Unknown (2): fetch failed <- ... ECONNREFUSED". */
function describe(error: unknown): string {
  const parts: string[] = [];
  for (let cause = error, depth = 0; cause !== undefined && depth < 5; depth++) {
    if (cause instanceof ConnectError) {
      parts.push(`ConnectError ${Code[cause.code]} (${cause.code}): ${cause.rawMessage}`);
    } else if (cause instanceof Error) {
      parts.push(`${cause.name}: ${cause.message}`);
    } else {
      parts.push(String(cause));
      break;
    }
    cause = cause.cause;
  }
  return parts.join(" <- ");
}

/** Expects `call` to fail with `code`; returns the error's message. */
async function expectCode(name: string, code: Code, call: () => Promise<unknown>): Promise<string> {
  let outcome: unknown;
  try {
    outcome = await call();
  } catch (error) {
    const connectError = ConnectError.from(error);
    check(
      connectError.code === code,
      name,
      `expected ${Code[code]}, got ${describe(connectError)}`,
    );
    return connectError.rawMessage;
  }
  throw new CheckFailed(name, `expected ${Code[code]}, but the call succeeded: ${JSON.stringify(outcome, replacer)}`);
}

function replacer(_key: string, value: unknown) {
  return typeof value === "bigint" ? value.toString() : value;
}

function bearer(token: string) {
  return { authorization: `Bearer ${token}` };
}

function subscribeRequest(conversations: string[]) {
  return { positions: conversations.map((conversationId) => ({ conversationId, sequence: 0n })) };
}

/**
 * Opens Subscribe, reads exactly `conversations.length` events (the double sends one per position
 * and then keeps the stream open, so reading them proves events arrive one by one, not at the end
 * of the response), then aborts the call. Returns the typing events' conversation ids.
 */
async function subscribeAndAbort(
  chat: Client<typeof ChatService>,
  token: string,
  conversations: string[],
  timeoutMs: number,
): Promise<string[]> {
  const controller = new AbortController();
  const timer = setTimeout(
    () => controller.abort(new Error(`no ${conversations.length} events within ${timeoutMs} ms`)),
    timeoutMs,
  );
  const received: string[] = [];
  try {
    const stream = chat.subscribe(subscribeRequest(conversations), {
      headers: bearer(token),
      signal: controller.signal,
    });
    for await (const response of stream) {
      const event = response.event?.event;
      if (event?.case !== "typing") {
        throw new Error(`expected a typing event, got ${JSON.stringify(response.event, replacer)}`);
      }
      received.push(event.value.conversationId);
      if (received.length === conversations.length) {
        controller.abort();
        break;
      }
    }
  } finally {
    clearTimeout(timer);
  }
  if (received.length < conversations.length) {
    throw new Error(`the stream ended after ${received.length} of ${conversations.length} events`);
  }
  return received;
}

async function run(options: Options) {
  const transport: Transport = createGrpcWebTransport({ baseUrl: options.baseUrl, useBinaryFormat: true });
  const auth = createClient(AuthService, transport);
  const chat = createClient(ChatService, transport);
  const unary = { timeoutMs: options.timeoutMs };

  // (a) A public unary call: no token needed.
  const jwks = await step("getJwks", () => auth.getJwks({}, unary));
  const okp = jwks.keys.filter((key) => key.kty === "OKP");
  check(okp.length > 0, "getJwks", `expected an OKP key, got ${JSON.stringify(jwks.keys)}`);

  // (b) Register and log in a fresh user.
  const { username } = options;
  const registered = await step("register", () => auth.register({ username, password: PASSWORD }, unary));
  check(registered.user?.username === username, "register", `registered ${JSON.stringify(registered.user, replacer)}`);
  const login = await step("login", () => auth.login({ username, password: PASSWORD, deviceName: "node" }, unary));
  const token = login.tokens?.accessToken ?? "";
  check(token.split(".").length === 3, "login", `expected a JWT access token, got "${token}"`);

  // (c) An authenticated unary call.
  const me = await step("getCurrentUser", () => auth.getCurrentUser({}, { ...unary, headers: bearer(token) }));
  check(me.user?.username === username, "getCurrentUser", `expected ${username}, got ${JSON.stringify(me.user, replacer)}`);

  // (d) Without a token, or with a bad one, the gateway refuses unary and streaming calls.
  const refused = {
    getCurrentUser: await expectCode("getCurrentUser without a token", Code.Unauthenticated, () =>
      auth.getCurrentUser({}, unary),
    ),
    getCurrentUserBadToken: await expectCode("getCurrentUser with a bad token", Code.Unauthenticated, () =>
      auth.getCurrentUser({}, { ...unary, headers: bearer("not.a.token") }),
    ),
    subscribe: await expectCode("subscribe without a token", Code.Unauthenticated, async () => {
      for await (const response of chat.subscribe(subscribeRequest(["c1"]), unary)) return response;
    }),
  };

  // (e) A server stream: three events in order, then the client aborts it.
  const streamed = await step("subscribe", () =>
    subscribeAndAbort(chat, token, CONVERSATIONS, options.timeoutMs),
  );
  check(
    JSON.stringify(streamed) === JSON.stringify(CONVERSATIONS),
    "subscribe",
    `expected typing events for ${CONVERSATIONS.join(",")} in order, got ${streamed.join(",")}`,
  );

  return {
    ok: true,
    baseUrl: options.baseUrl,
    transport: "grpc-web+proto",
    jwksKeys: jwks.keys.length,
    username,
    currentUser: me.user?.username,
    refused,
    streamed,
    streamAborted: true,
  };
}

async function main() {
  let options: Options;
  try {
    options = parseArgs(process.argv.slice(2));
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    console.log(JSON.stringify({ ok: false, step: "usage", error: message }));
    console.error(`usage: node grpc-web-client.mjs <gateway base URL> [--username NAME] [--timeout-ms MS]\n${message}`);
    process.exit(2);
  }
  try {
    console.log(JSON.stringify(await run(options)));
    process.exit(0);
  } catch (error) {
    const failed = error instanceof CheckFailed ? error : new CheckFailed("unexpected", describe(error));
    console.log(JSON.stringify({ ok: false, step: failed.step, error: failed.message }));
    console.error(`gRPC-Web client check failed at step "${failed.step}": ${failed.message}`);
    process.exit(1);
  }
}

await main();
