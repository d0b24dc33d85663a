#!/usr/bin/env bash
# THE command that runs the whole system locally:
#
#   ci/up.sh              build, migrate, start auth, chat, group and the gateway on loopback;
#                         Ctrl-C stops everything (and the throwaway database) cleanly
#   ci/up.sh --smoke      the same, then check every service answers (health + reflection
#                         through grpcurl) and stop: what CI runs to keep this command true
#
# Database: $DATABASE_URL if set (the services use its schemas auth, chat and groups); otherwise a
# throwaway PostgreSQL in a temporary directory, deleted on exit.
# Ports: gateway 8080 (the only public one), auth 50061, chat 50062, group 50063; override with
# GATEWAY_PORT / AUTH_PORT / CHAT_PORT / GROUP_PORT. Logs go to .local/logs/<service>.log.

set -euo pipefail
# shellcheck source=ci/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"
setup_path
bash ci/install-tools.sh --runtime

smoke=0
case "${1:-}" in
    --smoke) smoke=1 ;;
    "") ;;
    *) die "usage: ci/up.sh [--smoke]" ;;
esac

GATEWAY_PORT="${GATEWAY_PORT:-8080}"
AUTH_PORT="${AUTH_PORT:-50061}"
CHAT_PORT="${CHAT_PORT:-50062}"
GROUP_PORT="${GROUP_PORT:-50063}"
LOG_DIR="$REPO/.local/logs"
mkdir -p "$LOG_DIR"

for port in "$GATEWAY_PORT" "$AUTH_PORT" "$CHAT_PORT" "$GROUP_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is already in use (another ci/up.sh running?); set *_PORT to choose others"
    fi
done

log "building the service binaries (first build takes a few minutes)"
cargo build --locked --bins

if [[ -n "${DATABASE_URL:-}" ]]; then
    log "using DATABASE_URL from the environment"
else
    start_throwaway_postgres
fi
export DATABASE_URL

log "applying migrations"
MIGRATE_DATABASE_URL="$DATABASE_URL" target/debug/migrate

# Auth's secrets, made once and kept in .local/ (git-ignored) so sessions survive a restart.
SECRETS_DIR="$REPO/.local/secrets"
mkdir -p "$SECRETS_DIR"
chmod 700 "$SECRETS_DIR"
if [[ ! -s "$SECRETS_DIR/auth-signing-key.pem" ]]; then
    (umask 077 && target/debug/auth keygen >"$SECRETS_DIR/auth-signing-key.pem")
fi
if [[ ! -s "$SECRETS_DIR/auth-refresh-token-secret" ]]; then
    (umask 077 && head -c 32 /dev/urandom | base64 >"$SECRETS_DIR/auth-refresh-token-secret")
fi
if [[ ! -s "$SECRETS_DIR/service-secret" ]]; then
    # The credential services present to each other (chat following group's and auth's events).
    (umask 077 && head -c 32 /dev/urandom | base64 >"$SECRETS_DIR/service-secret")
fi
export AUTH_SIGNING_KEY_FILE="$SECRETS_DIR/auth-signing-key.pem"
export AUTH_REFRESH_TOKEN_SECRET_FILE="$SECRETS_DIR/auth-refresh-token-secret"
export AUTH_SERVICE_SECRET_FILE="$SECRETS_DIR/service-secret"
export CHAT_SERVICE_SECRET_FILE="$SECRETS_DIR/service-secret"
export GROUP_SERVICE_SECRET_FILE="$SECRETS_DIR/service-secret"
export GATEWAY_SERVICE_SECRET_FILE="$SECRETS_DIR/service-secret"

pids=()
stop_services() {
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}
on_exit stop_services

# start NAME PREFIX PORT : run target/debug/NAME with PREFIX_* settings, logging to LOG_DIR.
start() {
    local name="$1" prefix="$2" port="$3"
    env "${prefix}_LISTEN_ADDR=127.0.0.1:$port" "${prefix}_LOG=${LOG:-info}" \
        "${prefix}_SHUTDOWN_TIMEOUT_SECS=5" \
        ${4:+"${prefix}_DATABASE_URL=$DATABASE_URL"} \
        "target/debug/$name" >"$LOG_DIR/$name.log" 2>&1 &
    pids+=("$!")
}
# Wire the services to each other's ports (the defaults assume the default ports).
export CHAT_AUTH_URL="http://127.0.0.1:$AUTH_PORT" GROUP_AUTH_URL="http://127.0.0.1:$AUTH_PORT"
export GATEWAY_AUTH_URL="http://127.0.0.1:$AUTH_PORT" GATEWAY_CHAT_URL="http://127.0.0.1:$CHAT_PORT"
export GATEWAY_GROUP_URL="http://127.0.0.1:$GROUP_PORT"
start auth AUTH "$AUTH_PORT" with-db
start chat-server CHAT "$CHAT_PORT" with-db
start group GROUP "$GROUP_PORT" with-db
# The browser demo, bundled for the gateway to serve at / (web-demo/README.md).
node web-demo/build.mjs "$REPO/.local/web-demo" >/dev/null
export GATEWAY_WEB_ROOT="$REPO/.local/web-demo"
start gateway GATEWAY "$GATEWAY_PORT"

# Every service reports SERVING on gRPC health once it listens and reaches the database.
wait_serving() {
    local name="$1" port="$2" deadline=$((SECONDS + 30))
    until grpcurl -plaintext -max-time 2 "127.0.0.1:$port" grpc.health.v1.Health/Check 2>/dev/null |
        grep -q '"SERVING"'; do
        if ((SECONDS > deadline)); then
            tail -n 20 "$LOG_DIR/$name.log" >&2 || true
            die "$name did not become healthy on port $port (log: $LOG_DIR/$name.log)"
        fi
        sleep 0.2
    done
}
command -v grpcurl >/dev/null || die "grpcurl not found: run ci/install-tools.sh"
wait_serving auth "$AUTH_PORT"
wait_serving chat-server "$CHAT_PORT"
wait_serving group "$GROUP_PORT"
wait_serving gateway "$GATEWAY_PORT"

if [[ $smoke == 1 ]]; then
    for port in "$GATEWAY_PORT" "$AUTH_PORT" "$CHAT_PORT" "$GROUP_PORT"; do
        grpcurl -plaintext "127.0.0.1:$port" list >"$LOG_DIR/list-$port.txt"
    done
    grep -qx 'chat.v1.ChatService' "$LOG_DIR/list-$GATEWAY_PORT.txt" || die "gateway reflection lacks chat.v1.ChatService"
    grep -qx 'auth.v1.AuthService' "$LOG_DIR/list-$AUTH_PORT.txt" || die "auth reflection lacks auth.v1.AuthService"
    grep -qx 'chat.v1.ChatService' "$LOG_DIR/list-$CHAT_PORT.txt" || die "chat reflection lacks chat.v1.ChatService"
    grep -qx 'group.v1.GroupService' "$LOG_DIR/list-$GROUP_PORT.txt" || die "group reflection lacks group.v1.GroupService"
    # A real account round trip through the gateway, then an authenticated call.
    smoke_user="smoke-$RANDOM$RANDOM"
    credentials="{\"username\":\"$smoke_user\",\"password\":\"smoke test password\"}"
    grpcurl -plaintext -d "$credentials" "127.0.0.1:$GATEWAY_PORT" auth.v1.AuthService/Register >/dev/null ||
        die "Register through the gateway failed"
    token="$(grpcurl -plaintext -d "$credentials" "127.0.0.1:$GATEWAY_PORT" auth.v1.AuthService/Login |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["tokens"]["accessToken"])')" ||
        die "Login through the gateway failed"
    grpcurl -plaintext -H "authorization: Bearer $token" "127.0.0.1:$GATEWAY_PORT" \
        auth.v1.AuthService/GetCurrentUser | grep -q "\"$smoke_user\"" || die "GetCurrentUser failed"
    node -e 'fetch(process.argv[1]).then((r) => r.text()).then((t) => process.exit(t.includes("/static/app.js") ? 0 : 1), () => process.exit(1))' \
        "http://127.0.0.1:$GATEWAY_PORT/" || die "the gateway does not serve the web demo"
    log "smoke check passed: every service is SERVING and lists its APIs; register, login and an authenticated call work through the gateway"
    exit 0
fi

cat <<EOF

  The system is up.
    web demo (open in a browser)   http://127.0.0.1:$GATEWAY_PORT/
    gateway (the public endpoint)  127.0.0.1:$GATEWAY_PORT   (gRPC, gRPC-Web, /healthz, /readyz, /metrics)
    auth / chat / group            127.0.0.1:$AUTH_PORT / $CHAT_PORT / $GROUP_PORT
    database                       $DATABASE_URL
    logs                           $LOG_DIR/

  Try:
    export PATH="$REPO/.venv/bin:\$PATH"
    grpcurl -plaintext 127.0.0.1:$GATEWAY_PORT list
    grpcurl -plaintext 127.0.0.1:$GATEWAY_PORT describe chat.v1.ChatService
    grpcurl -plaintext -d '{"username":"alice","password":"correct horse battery"}' \
      127.0.0.1:$GATEWAY_PORT auth.v1.AuthService/Register
    grpcurl -plaintext -d '{"username":"alice","password":"correct horse battery"}' \
      127.0.0.1:$GATEWAY_PORT auth.v1.AuthService/Login
    grpcurl -plaintext -H "authorization: Bearer \$ACCESS_TOKEN" \
      127.0.0.1:$GATEWAY_PORT auth.v1.AuthService/GetCurrentUser

  Press Ctrl-C to stop everything.
EOF

# Stay up until Ctrl-C (the exit hooks stop the services and the database) or a service dies.
while true; do
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[i]}" 2>/dev/null; then
            die "a service exited unexpectedly; see the logs in $LOG_DIR"
        fi
    done
    sleep 1
done
