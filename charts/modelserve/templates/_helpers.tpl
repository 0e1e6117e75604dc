{{/* Names: <release>-modelserve unless the release name already contains the chart name. */}}
{{- define "modelserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelserve.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Maps a name from config/rbac (modelserve-<x>) to this release's (<fullname>-<x>), so that the chart's RBAC objects,
bindings and ServiceAccounts are the repository's, renamed per release. Args: (list $root $name).
*/}}
{{- define "modelserve.mapName" -}}
{{- $root := index . 0 }}
{{- $name := index . 1 }}
{{- if eq $name "modelserve" }}
{{- include "modelserve.fullname" $root }}
{{- else if hasPrefix "modelserve-" $name }}
{{- printf "%s-%s" (include "modelserve.fullname" $root) (trimPrefix "modelserve-" $name) }}
{{- else }}
{{- $name }}
{{- end }}
{{- end }}

{{- define "modelserve.operatorName" -}}
{{- include "modelserve.mapName" (list . "modelserve-operator") }}
{{- end }}
{{- define "modelserve.gatewayName" -}}
{{- include "modelserve.mapName" (list . "modelserve-gateway") }}
{{- end }}
{{- define "modelserve.redisName" -}}
{{- include "modelserve.mapName" (list . "modelserve-redis") }}
{{- end }}

{{- define "modelserve.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelserve
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component. Args: (list $root "operator"). */}}
{{- define "modelserve.selectorLabels" -}}
app.kubernetes.io/name: modelserve-{{ index . 1 }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
{{- end }}

{{/* Release labels plus a component's selector labels and component name. Args: (list $root "operator"). */}}
{{- define "modelserve.componentLabels" -}}
{{- $labels := fromYaml (include "modelserve.labels" (index . 0)) }}
{{- $labels = merge (fromYaml (include "modelserve.selectorLabels" .)) $labels }}
{{- toYaml (merge (dict "app.kubernetes.io/component" (index . 1)) $labels) }}
{{- end }}

{{- define "modelserve.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Restricted pod security (Pod Security Standards "restricted"). Arg: the user id. */}}
{{- define "modelserve.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "modelserve.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The Secret and key holding the Redis password; empty name when Redis has no password. */}}
{{- define "modelserve.redisSecretName" -}}
{{- if .Values.redis.auth.existingSecret }}
{{- .Values.redis.auth.existingSecret }}
{{- else if or .Values.redis.enabled .Values.redis.auth.password }}
{{- include "modelserve.redisName" . }}
{{- end }}
{{- end }}

{{- define "modelserve.redisSecretKey" -}}
{{- if .Values.redis.auth.existingSecret }}{{ .Values.redis.auth.existingSecretKey }}{{ else }}password{{ end }}
{{- end }}

{{/*
Environment of the processes that talk to Redis: REDIS_PASSWORD from the Secret, then MODELSERVE_REDIS_URL with the
password put in by Kubernetes' $(VAR) expansion (the password never appears in the pod spec).
*/}}
{{- define "modelserve.redisEnv" -}}
{{- $secret := include "modelserve.redisSecretName" . }}
{{- $url := .Values.redis.url }}
{{- if .Values.redis.enabled }}
{{- $url = printf "redis://%s.%s.svc:6379" (include "modelserve.redisName" .) .Release.Namespace }}
{{- end }}
{{- if $url }}
{{- if $secret }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ include "modelserve.redisSecretKey" . }}
{{- $url = regexReplaceAll "^(rediss?://)" $url "${1}:$(REDIS_PASSWORD)@" }}
{{- end }}
- name: MODELSERVE_REDIS_URL
  value: {{ $url | quote }}
{{- end }}
{{- end }}
