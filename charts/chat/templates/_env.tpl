{{/*
Environment of each component. Every name is one its binary reads (see <service>/local.env.example
and <service>/src/config.rs); charts/tests/test_env.py checks it. Secrets are mounted files
(<P>_..._FILE), except the database URL, which the binaries only take from the environment.
*/}}

{{/* Settings every server has: (dict "root" $ "component" "auth" "prefix" "AUTH"). */}}
{{- define "chat.env.server" -}}
{{- $c := index .root.Values.components .component }}
- name: {{ .prefix }}_LISTEN_ADDR
  value: {{ printf "%s:%v" .root.Values.listenHost $c.port | quote }}
- name: {{ .prefix }}_LOG
  value: {{ .root.Values.logLevel | quote }}
- name: {{ .prefix }}_LOG_FORMAT
  value: {{ .root.Values.logFormat | quote }}
- name: {{ .prefix }}_SHUTDOWN_TIMEOUT_SECS
  value: {{ $c.shutdownTimeoutSeconds | quote }}
{{- with .root.Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ $.component | quote }}
{{- end }}
{{- if ne .component "gateway" }}
- name: {{ .prefix }}_METRICS_LISTEN_ADDR
  value: {{ printf "%s:%v" .root.Values.listenHost .root.Values.serviceMetrics.port | quote }}
{{- end }}
{{- end }}

{{/* Database pool settings: (dict "root" $ "prefix" "AUTH"). */}}
{{- define "chat.env.database" -}}
{{ include "chat.databaseUrlEnv" (dict "root" .root "name" (printf "%s_DATABASE_URL" .prefix)) }}
- name: {{ .prefix }}_DATABASE_MAX_CONNECTIONS
  value: {{ .root.Values.database.maxConnections | quote }}
{{- end }}

{{/* What access tokens must say, and how long revocations are trusted, for every component but
auth (which signs them). */}}
{{- define "chat.env.token" -}}
- name: {{ .prefix }}_TOKEN_ISSUER
  value: {{ .root.Values.token.issuer | quote }}
- name: {{ .prefix }}_TOKEN_AUDIENCE
  value: {{ .root.Values.token.audience | quote }}
- name: {{ .prefix }}_REVOCATION_MAX_STALENESS_SECS
  value: {{ .root.Values.token.revocationMaxStalenessSeconds | quote }}
{{- end }}

{{- define "chat.env.serviceSecret" -}}
- name: {{ .prefix }}_SERVICE_SECRET_FILE
  value: /run/secrets/chat/service-secret/service-secret
{{- end }}

{{/*
The whole environment of a component: (dict "root" $ "component" NAME): what the chart sets, then
components.NAME.extraEnv, which may not repeat a name the chart sets.
*/}}
{{- define "chat.env" -}}
{{- $c := index .root.Values.components .component }}
{{- $own := include (printf "chat.env.%s.own" .component) (dict "root" .root) }}
{{- $names := list }}
{{- range ($own | fromYamlArray) }}{{ $names = append $names .name }}{{ end }}
{{- $own }}
{{- range $name, $value := $c.extraEnv }}
{{- if has $name $names }}
{{- fail (printf "components.%s.extraEnv.%s is set by the chart itself: use the chart's value for it" $.component $name) }}
{{- end }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{- define "chat.env.auth.own" -}}
{{- $args := dict "root" .root "component" "auth" "prefix" "AUTH" }}
{{ include "chat.env.server" $args }}
{{ include "chat.env.database" $args }}
- name: AUTH_TOKEN_ISSUER
  value: {{ .root.Values.token.issuer | quote }}
- name: AUTH_TOKEN_AUDIENCE
  value: {{ .root.Values.token.audience | quote }}
- name: AUTH_ACCESS_TOKEN_TTL_SECS
  value: {{ .root.Values.auth.accessTokenTtlSeconds | quote }}
- name: AUTH_PASSWORD_HASHING_CONCURRENCY
  value: {{ .root.Values.auth.passwordHashingConcurrency | quote }}
- name: AUTH_SIGNING_KEY_FILE
  value: /run/secrets/chat/signing-key/signing-key.pem
{{- if .root.Values.auth.previousSigningKeys.existingSecret }}
- name: AUTH_PREVIOUS_SIGNING_KEYS_FILE
  value: /run/secrets/chat/previous-signing-keys/previous-signing-keys.pem
{{- end }}
- name: AUTH_REFRESH_TOKEN_SECRET_FILE
  value: /run/secrets/chat/refresh-token-secret/refresh-token-secret
{{ include "chat.env.serviceSecret" $args }}
{{- end }}

{{- define "chat.env.chat.own" -}}
{{- $args := dict "root" .root "component" "chat" "prefix" "CHAT" }}
{{ include "chat.env.server" $args }}
{{ include "chat.env.database" $args }}
- name: CHAT_AUTH_URL
  value: {{ include "chat.headlessUrl" (dict "root" .root "component" "auth") | quote }}
{{ include "chat.env.token" $args }}
- name: CHAT_GROUP_URL
  value: {{ include "chat.headlessUrl" (dict "root" .root "component" "group") | quote }}
- name: CHAT_HEARTBEAT_SECS
  value: {{ .root.Values.chat.heartbeatSeconds | quote }}
{{- $bus := .root.Values.bus }}
- name: CHAT_BUS
  value: {{ $bus.kind | quote }}
{{- if eq $bus.kind "nats" }}
{{- if not $bus.nats.url }}
{{- fail "bus.kind is nats but bus.nats.url is empty: set the NATS server URL(s), e.g. nats://nats.nats:4222" }}
{{- end }}
- name: CHAT_NATS_URL
  value: {{ $bus.nats.url | quote }}
{{- if $bus.nats.credentials.existingSecret }}
- name: CHAT_NATS_CREDENTIALS_FILE
  value: /run/secrets/chat/nats/nats.creds
{{- end }}
{{- end }}
{{ include "chat.env.serviceSecret" $args }}
{{- end }}

{{- define "chat.env.group.own" -}}
{{- $args := dict "root" .root "component" "group" "prefix" "GROUP" }}
{{ include "chat.env.server" $args }}
{{ include "chat.env.database" $args }}
- name: GROUP_AUTH_URL
  value: {{ include "chat.headlessUrl" (dict "root" .root "component" "auth") | quote }}
{{ include "chat.env.token" $args }}
{{ include "chat.env.serviceSecret" $args }}
{{- end }}

{{- define "chat.env.gateway.own" -}}
{{- $args := dict "root" .root "component" "gateway" "prefix" "GATEWAY" }}
{{ include "chat.env.server" $args }}
- name: GATEWAY_AUTH_URL
  value: {{ include "chat.headlessUrl" (dict "root" .root "component" "auth") | quote }}
- name: GATEWAY_CHAT_URL
  value: {{ include "chat.headlessUrl" (dict "root" .root "component" "chat") | quote }}
- name: GATEWAY_GROUP_URL
  value: {{ include "chat.headlessUrl" (dict "root" .root "component" "group") | quote }}
- name: GATEWAY_UPSTREAM_RESOLVE_INTERVAL_SECS
  value: {{ .root.Values.gateway.upstreamResolveIntervalSeconds | quote }}
{{ include "chat.env.token" $args }}
- name: GATEWAY_CORS_ALLOWED_ORIGINS
  value: {{ join "," .root.Values.gateway.corsAllowedOrigins | quote }}
- name: GATEWAY_METRICS_LISTEN_ADDR
  value: {{ printf "%s:%v" .root.Values.listenHost .root.Values.gateway.metricsPort | quote }}
{{ include "chat.env.serviceSecret" $args }}
{{- end }}

{{/* Secret volumes of each component: (dict "root" $ "component" NAME); mounts under /run/secrets/chat. */}}
{{- define "chat.secretVolumes" -}}
{{- $root := .root }}
{{- if eq .component "auth" }}
- name: signing-key
  secret:
    secretName: {{ include "chat.signingKeySecretName" $root }}
    defaultMode: 0440
    items:
      - {key: {{ $root.Values.auth.signingKey.key | quote }}, path: signing-key.pem}
{{- if $root.Values.auth.previousSigningKeys.existingSecret }}
- name: previous-signing-keys
  secret:
    secretName: {{ $root.Values.auth.previousSigningKeys.existingSecret }}
    defaultMode: 0440
    items:
      - {key: {{ $root.Values.auth.previousSigningKeys.key | quote }}, path: previous-signing-keys.pem}
{{- end }}
- name: refresh-token-secret
  secret:
    secretName: {{ include "chat.refreshTokenSecretName" $root }}
    defaultMode: 0440
    items:
      - {key: {{ $root.Values.auth.refreshTokenSecret.key | quote }}, path: refresh-token-secret}
{{- end }}
{{- if and (eq .component "chat") (eq $root.Values.bus.kind "nats") $root.Values.bus.nats.credentials.existingSecret }}
- name: nats-credentials
  secret:
    secretName: {{ $root.Values.bus.nats.credentials.existingSecret }}
    defaultMode: 0440
    items:
      - {key: {{ $root.Values.bus.nats.credentials.key | quote }}, path: nats.creds}
{{- end }}
{{- if has .component (list "auth" "chat" "group" "gateway") }}
- name: service-secret
  secret:
    secretName: {{ include "chat.serviceSecretName" $root }}
    defaultMode: 0440
    items:
      - {key: {{ $root.Values.serviceSecret.key | quote }}, path: service-secret}
{{- end }}
{{- end }}

{{- define "chat.secretMounts" -}}
{{- if eq .component "auth" }}
- {name: signing-key, mountPath: /run/secrets/chat/signing-key, readOnly: true}
{{- if .root.Values.auth.previousSigningKeys.existingSecret }}
- {name: previous-signing-keys, mountPath: /run/secrets/chat/previous-signing-keys, readOnly: true}
{{- end }}
- {name: refresh-token-secret, mountPath: /run/secrets/chat/refresh-token-secret, readOnly: true}
{{- end }}
{{- if and (eq .component "chat") (eq .root.Values.bus.kind "nats") .root.Values.bus.nats.credentials.existingSecret }}
- {name: nats-credentials, mountPath: /run/secrets/chat/nats, readOnly: true}
{{- end }}
{{- if has .component (list "auth" "chat" "group" "gateway") }}
- {name: service-secret, mountPath: /run/secrets/chat/service-secret, readOnly: true}
{{- end }}
{{- end }}
