// The gateway over gRPC-Web (generated clients from src/gen, @connectrpc/connect-web), and the
// session's tokens: every call carries the access token, refreshed a minute before it expires
// and once more after UNAUTHENTICATED; rotated refresh tokens are saved before they are used.

import { Code, ConnectError, createClient, type CallOptions, type Client } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { AuthService, type TokenPair } from "./gen/auth/v1/auth_pb";
import { ChatService } from "./gen/chat/v1/chat_pb";
import { GroupService } from "./gen/group/v1/group_pb";
import * as store from "./store";
import type { SessionRecord } from "./store";

const REFRESH_MARGIN_SECS = 60;

export type AuthClient = Client<typeof AuthService>;
export type ChatClient = Client<typeof ChatService>;
export type GroupClient = Client<typeof GroupService>;

export class Api {
  readonly auth: AuthClient;
  readonly chat: ChatClient;
  readonly group: GroupClient;

  constructor(baseUrl: string) {
    const transport = createGrpcWebTransport({ baseUrl });
    this.auth = createClient(AuthService, transport);
    this.chat = createClient(ChatService, transport);
    this.group = createClient(GroupService, transport);
  }
}

export function sessionFrom(username: string, pair: TokenPair | undefined): SessionRecord {
  return {
    username,
    accessToken: pair?.accessToken ?? "",
    accessExpiresAt: Number(pair?.accessTokenExpiresAt?.seconds ?? 0n),
    accessIssuedAt: Math.floor(Date.now() / 1000),
    refreshToken: pair?.refreshToken ?? "",
  };
}

/** Thrown when the session cannot be renewed: the user must log in again. */
export class SessionEnded extends Error {}

/** The logged-in session's tokens. */
export class Tokens {
  private refreshing: Promise<void> | undefined;
  /** How many times the tokens were refreshed (shown to tests as `body[data-refreshes]`). */
  refreshes = 0;

  constructor(
    private readonly api: Api,
    public session: SessionRecord,
  ) {}

  /** Call options with a valid access token (refreshed first when it is about to expire). */
  async options(signal?: AbortSignal): Promise<CallOptions> {
    // A minute before expiry, or at three quarters of a shorter lifetime.
    const lifetime = this.session.accessExpiresAt - (this.session.accessIssuedAt ?? 0);
    const margin = Math.min(REFRESH_MARGIN_SECS, Math.max(0, lifetime / 4));
    if (this.session.accessExpiresAt - Date.now() / 1000 < margin) await this.refresh();
    return { headers: { authorization: `Bearer ${this.session.accessToken}` }, signal };
  }

  /** Runs `rpc` with the token; after UNAUTHENTICATED refreshes once and runs it again. */
  async call<T>(rpc: (options: CallOptions) => Promise<T>): Promise<T> {
    const token = this.session.accessToken;
    try {
      return await rpc(await this.options());
    } catch (error) {
      if (ConnectError.from(error).code !== Code.Unauthenticated) throw error;
      if (this.session.accessToken === token) await this.refresh();
      return rpc(await this.options());
    }
  }

  /** Refreshes the tokens (one refresh at a time; concurrent callers wait for it). */
  refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        const response = await this.api.auth.refresh({ refreshToken: this.session.refreshToken });
        this.session = sessionFrom(this.session.username, response.tokens);
        await store.put(store.keys.session, this.session);
        this.refreshes++;
      } catch (error) {
        const code = ConnectError.from(error).code;
        if (code === Code.Unauthenticated || code === Code.NotFound || code === Code.PermissionDenied) {
          throw new SessionEnded("the session ended: log in again");
        }
        throw error;
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }
}
