{{/* The four long-running components, in the order they are rendered. */}}
{{- define "chat.components" -}}
auth chat group gateway
{{- end }}

{{- define "chat.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every resource name: release-chart, or the release name when it already says "chat". */}}
{{- define "chat.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of a component's resources: (dict "root" $ "component" "auth"). */}}
{{- define "chat.componentName" -}}
{{- printf "%s-%s" (include "chat.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "chat.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "chat.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: chat
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "auth"). */}}
{{- define "chat.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chat.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "chat.componentLabels" -}}
{{ include "chat.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
podLabels, for a component's pods: (dict "root" $ "component" NAME). A key the chart sets would
repeat it (the later one wins): the selector labels would no longer match the pods, and the
Deployment, Service, PDB and NetworkPolicies would lose them.
*/}}
{{- define "chat.podLabels" -}}
{{- $own := include "chat.componentLabels" . | fromYaml }}
{{- range $key, $value := .root.Values.podLabels }}
{{- if hasKey $own $key }}
{{- fail (printf "podLabels.%s is a label the chart sets (selectors match on it): choose another key" $key) }}
{{- end }}
{{- end }}
{{- with .root.Values.podLabels }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{- define "chat.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "chat.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "chat.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Pod Security Standards "restricted", for every pod of the chart. UID 65532 is distroless' nonroot. */}}
{{- define "chat.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .runAsUser | default 65532 }}
runAsGroup: {{ .runAsUser | default 65532 }}
fsGroup: {{ .runAsUser | default 65532 }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "chat.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The Secret and key holding the database URL. */}}
{{- define "chat.databaseSecretName" -}}
{{- if .Values.postgresql.enabled }}
{{- printf "%s-postgresql" (include "chat.fullname" .) }}
{{- else }}
{{- .Values.database.existingSecret }}
{{- end }}
{{- end }}

{{- define "chat.databaseSecretKey" -}}
{{- if .Values.postgresql.enabled }}url{{ else }}{{ .Values.database.existingSecretKey }}{{ end }}
{{- end }}

{{/* env entry NAME from the database URL Secret: (dict "root" $ "name" "AUTH_DATABASE_URL"). */}}
{{- define "chat.databaseUrlEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "chat.databaseSecretName" .root }}
      key: {{ include "chat.databaseSecretKey" .root }}
{{- end }}

{{/* Names of the Secrets the chart generates unless an existing one is named. */}}
{{- define "chat.signingKeySecretName" -}}
{{- default (printf "%s-auth-signing-key" (include "chat.fullname" .)) .Values.auth.signingKey.existingSecret }}
{{- end }}
{{- define "chat.refreshTokenSecretName" -}}
{{- default (printf "%s-auth-refresh-token-secret" (include "chat.fullname" .)) .Values.auth.refreshTokenSecret.existingSecret }}
{{- end }}
{{- define "chat.serviceSecretName" -}}
{{- default (printf "%s-service-secret" (include "chat.fullname" .)) .Values.serviceSecret.existingSecret }}
{{- end }}

{{/*
A Secret generated once: on upgrade the values already in the cluster are kept (Helm's `lookup`;
`helm template` and `--dry-run` have no cluster and show fresh values), and `keep` leaves it in
place on uninstall so a reinstall reuses it. Takes (dict "root" $ "name" NAME "key" KEY "value" FRESH).
*/}}
{{- define "chat.generatedSecret" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name }}
{{- $value := .value | b64enc }}
{{- if and $existing $existing.data (hasKey $existing.data .key) }}
{{- $value = index $existing.data .key }}
{{- end }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ .name }}
  labels:
    {{- include "chat.labels" .root | nindent 4 }}
  annotations:
    helm.sh/resource-policy: keep
type: Opaque
data:
  {{ .key }}: {{ $value }}
{{- end }}

{{/* Where the services find each other: the gateway, and chat and group for their calls to auth
and group, reach every pod through a headless Service, which they re-resolve (the gateway's
upstream pools, common::balance): a ClusterIP would pin their long-lived HTTP/2 connections to one
pod. */}}
{{- define "chat.headlessUrl" -}}
{{- $c := index .root.Values.components .component }}
{{- printf "http://%s-headless:%v" (include "chat.componentName" .) $c.port }}
{{- end }}

{{/* When the migrations run (the Job and its NetworkPolicy): before the new version's pods, except
on the first install with the bundled PostgreSQL, which does not exist before it. */}}
{{- define "chat.migrationHooks" -}}
{{ ternary "post-install,pre-upgrade" "pre-install,pre-upgrade" .Values.postgresql.enabled }}
{{- end }}

{{/* The egress rule to cluster DNS: by pod selector, and by address for networkPolicy.dns.ipBlocks. */}}
{{- define "chat.dnsEgress" -}}
{{- $dns := .Values.networkPolicy.dns -}}
- to:
    - namespaceSelector:
        {{- toYaml $dns.namespaceSelector | nindent 8 }}
      podSelector:
        {{- toYaml $dns.podSelector | nindent 8 }}
    {{- range $dns.ipBlocks }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
  ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- end }}
