#!/usr/bin/env bash
# Two `ci/up.sh` stacks side by side on one machine must be fully separate. Starts two stacks at
# once, each on its own free ports with its own throwaway PostgreSQL, and checks through each
# gateway that:
#   - it reaches only its own services: a user registered on one does not exist on the other, a
#     token of one is refused by the other (different signing keys), and a call that crosses
#     chat -> group (ListConversations after CreateGroup) answers with the stack's own group;
#   - its metrics are on its own metrics port (the public port answers 404 for /metrics);
#   - its state (secrets, logs, web demo) is in its own directory, and the second stack's start
#     did not truncate the first one's logs;
# then stops both with SIGTERM, as Ctrl-C would, and checks that every port is free again.
#
#   ci/two-stacks-test.sh       (run by ci/test.sh after the smoke test; needs initdb and grpcurl)

set -euo pipefail
# shellcheck source=ci/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"
setup_path
command -v grpcurl >/dev/null || die "grpcurl not found: run ci/install-tools.sh"

work="$(mktemp -d "${TMPDIR:-/tmp}/two-stacks.XXXXXX")"
on_exit "rm -rf '$work'"

# Five distinct free ports per stack.
declare -A port
taken=" "
for stack in a b; do
    for service in gateway metrics auth chat group; do
        candidate="$(free_port)"
        while [[ $taken == *" $candidate "* ]]; do candidate="$(free_port)"; done
        taken+="$candidate "
        port[$stack.$service]="$candidate"
    done
done

declare -A pid
stop_stack() {
    local stack="$1"
    [[ -n "${pid[$stack]:-}" ]] || return 0
    kill -TERM "${pid[$stack]}" 2>/dev/null || true
    wait "${pid[$stack]}" 2>/dev/null || true
    pid[$stack]=""
}

start_stack() {
    local stack="$1"
    # No DATABASE_URL: each stack starts its own throwaway PostgreSQL.
    env -u DATABASE_URL -u LOCAL_DIR -u PORT_OFFSET \
        GATEWAY_PORT="${port[$stack.gateway]}" METRICS_PORT="${port[$stack.metrics]}" \
        AUTH_PORT="${port[$stack.auth]}" CHAT_PORT="${port[$stack.chat]}" \
        GROUP_PORT="${port[$stack.group]}" \
        ci/up.sh >"$work/$stack.out" 2>&1 </dev/null &
    pid[$stack]=$!
    on_exit "rm -rf '$REPO/.local/stack-${port[$stack.gateway]}'" # the state directory it makes
    on_exit "stop_stack $stack"
}

wait_up() {
    local stack="$1" deadline=$((SECONDS + 600))
    until grep -q "The system is up" "$work/$stack.out"; do
        if ! kill -0 "${pid[$stack]}" 2>/dev/null || ((SECONDS > deadline)); then
            cat "$work/$stack.out" >&2
            die "stack $stack did not come up"
        fi
        sleep 0.5
    done
}

log "starting stack a (gateway ${port[a.gateway]}) and stack b (gateway ${port[b.gateway]}) at once"
start_stack a
start_stack b
wait_up a
wait_up b

# The state directory each stack printed.
state_dir() { sed -n 's/^ *state (secrets, logs) *//p' "$work/$1.out"; }

# call STACK TOKEN METHOD JSON : a gRPC call through STACK's gateway; prints the response or error.
call() {
    local stack="$1" token="$2" method="$3" data="$4"
    local headers=()
    [[ -z "$token" ]] || headers=(-H "authorization: Bearer $token")
    grpcurl -plaintext "${headers[@]}" -d "$data" "127.0.0.1:${port[$stack.gateway]}" "$method" 2>&1
}

# json_field KEY... : the value at KEY... of the JSON on stdin.
json_field() { python3 -c $'import json, sys\nvalue = json.load(sys.stdin)\nfor key in sys.argv[1:]:\n    value = value[key]\nprint(value)' "$@"; }

http_get() { # URL -> "STATUS BODY"
    python3 - "$1" <<'EOF'
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as response:
        print(response.status, response.read().decode())
except urllib.error.HTTPError as error:
    print(error.code, error.read().decode())
EOF
}

declare -A token
for stack in a b; do
    user="user-$stack-$RANDOM$RANDOM"
    credentials="{\"username\":\"$user\",\"password\":\"two stacks password\"}"
    call "$stack" "" auth.v1.AuthService/Register "$credentials" >/dev/null || die "Register on $stack failed"
    token[$stack]="$(call "$stack" "" auth.v1.AuthService/Login "$credentials" | json_field tokens accessToken)" ||
        die "Login on $stack failed"
    printf '%s\n' "$credentials" >"$work/$stack.credentials"
done

for stack in a b; do
    other="$([[ $stack == a ]] && echo b || echo a)"

    # The user exists only where it registered, and only that stack's keys sign its tokens.
    if answer="$(call "$other" "" auth.v1.AuthService/Login "$(cat "$work/$stack.credentials")")"; then
        die "stack $stack's user logs in on stack $other: $answer"
    fi
    grep -q "Unauthenticated" <<<"$answer" || die "login of stack $stack's user on $other: $answer"
    if answer="$(call "$other" "${token[$stack]}" auth.v1.AuthService/GetCurrentUser '{}')"; then
        die "stack $other accepts stack $stack's token: $answer"
    fi
    grep -q "Unauthenticated" <<<"$answer" || die "stack $stack's token on $other: $answer"

    # chat -> group: chat lists the group conversations that its own group service knows.
    group_id="$(call "$stack" "${token[$stack]}" group.v1.GroupService/CreateGroup '{"name":"two stacks"}' |
        json_field group groupId)" || die "CreateGroup on $stack failed"
    conversations="$(call "$stack" "${token[$stack]}" chat.v1.ChatService/ListConversations '{}')" ||
        die "ListConversations on $stack failed (chat cannot reach its group service?): $conversations"
    grep -q "\"$group_id\"" <<<"$conversations" ||
        die "stack $stack's chat does not list group $group_id of its group service: $conversations"

    # Metrics on the metrics port only.
    metrics="$(http_get "http://127.0.0.1:${port[$stack.metrics]}/metrics")"
    [[ $metrics == "200 "* && $metrics == *"# EOF"* ]] || die "no metrics on stack $stack's metrics port: $metrics"
    public="$(http_get "http://127.0.0.1:${port[$stack.gateway]}/metrics")"
    [[ $public == "404 "* ]] || die "stack $stack's public port answers /metrics: ${public:0:80}"
done

# Separate state: directories, keys, and logs that still hold each stack's own start.
dir_a="$(state_dir a)" dir_b="$(state_dir b)"
[[ -n $dir_a && -n $dir_b && $dir_a != "$dir_b" ]] || die "the stacks share a state directory: '$dir_a' '$dir_b'"
for file in secrets/auth-signing-key.pem secrets/service-secret; do
    [[ -s $dir_a/$file && -s $dir_b/$file ]] || die "missing $file"
    ! cmp -s "$dir_a/$file" "$dir_b/$file" || die "the stacks share $file"
done
for stack in a b; do
    dir="$(state_dir "$stack")"
    other="$([[ $stack == a ]] && echo b || echo a)"
    grep -q "127.0.0.1:${port[$stack.gateway]}" "$dir/logs/gateway.log" ||
        die "stack $stack's gateway log lacks its start: $(head -c 2000 "$dir/logs/gateway.log")"
    grep -q "127.0.0.1:${port[$stack.chat]}" "$dir/logs/chat-server.log" ||
        die "stack $stack's chat log lacks its start"
    ! grep -q "127.0.0.1:${port[$other.gateway]}" "$dir/logs/gateway.log" ||
        die "stack $stack's gateway log holds stack $other's lines"
done

log "stopping both stacks"
stop_stack a
stop_stack b
for key in "${!port[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/${port[$key]}") 2>/dev/null; then
        die "port ${port[$key]} ($key) still answers after its stack stopped"
    fi
done
log "two stacks ran side by side, each with its own services, database, metrics port, secrets and logs"
