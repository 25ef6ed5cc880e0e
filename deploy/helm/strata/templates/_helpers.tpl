{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "strata.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name, prefix of every resource. Truncated so that
"<fullname>-scheduler" and the worker pods' "<fullname>-worker-N" stay
valid DNS labels.
*/}}
{{- define "strata.fullname" -}}
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

{{- define "strata.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "strata.labels" -}}
helm.sh/chart: {{ include "strata.chart" . }}
app.kubernetes.io/name: {{ include "strata.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: strata
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "scheduler"). */}}
{{- define "strata.selectorLabels" -}}
app.kubernetes.io/name: {{ include "strata.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component's resources. */}}
{{- define "strata.componentLabels" -}}
{{ include "strata.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "strata.scheduler.fullname" -}}
{{- printf "%s-scheduler" (include "strata.fullname" .) }}
{{- end }}

{{- define "strata.worker.fullname" -}}
{{- printf "%s-worker" (include "strata.fullname" .) }}
{{- end }}

{{- define "strata.redis.fullname" -}}
{{- printf "%s-redis" (include "strata.fullname" .) }}
{{- end }}

{{- define "strata.scheduler.serviceAccountName" -}}
{{- if .Values.scheduler.serviceAccount.create }}
{{- default (include "strata.scheduler.fullname" .) .Values.scheduler.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.scheduler.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "strata.worker.serviceAccountName" -}}
{{- if .Values.worker.serviceAccount.create }}
{{- default (include "strata.worker.fullname" .) .Values.worker.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.worker.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image: include with (dict "ctx" $ "image" .Values.scheduler.image). */}}
{{- define "strata.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* The scheduler's in-cluster DNS name (what its certificate must name). */}}
{{- define "strata.scheduler.host" -}}
{{- printf "%s.%s.svc" (include "strata.scheduler.fullname" .) .Release.Namespace }}
{{- end }}

{{/* The URL workers dial. */}}
{{- define "strata.scheduler.url" -}}
{{- if .Values.worker.schedulerUrl }}
{{- .Values.worker.schedulerUrl }}
{{- else }}
{{- printf "%s://%s:%d" (ternary "https" "http" .Values.tls.enabled) (include "strata.scheduler.host" .) (int .Values.scheduler.grpcPort) }}
{{- end }}
{{- end }}

{{/* Secret names: an existing one, else the one the chart creates. */}}
{{- define "strata.clientTokens.secretName" -}}
{{- default (printf "%s-client-tokens" (include "strata.fullname" .)) .Values.auth.clientTokens.existingSecret }}
{{- end }}

{{- define "strata.workerTokens.secretName" -}}
{{- default (printf "%s-worker-tokens" (include "strata.fullname" .)) .Values.auth.workerTokens.existingSecret }}
{{- end }}

{{- define "strata.s3.secretName" -}}
{{- default (printf "%s-s3" (include "strata.fullname" .)) .Values.s3.credentials.existingSecret }}
{{- end }}

{{- define "strata.redis.secretName" -}}
{{- if eq .Values.redis.mode "external" }}
{{- default (printf "%s-redis-url" (include "strata.fullname" .)) .Values.redis.external.existingSecret }}
{{- else }}
{{- default (printf "%s-redis" (include "strata.fullname" .)) .Values.redis.bundled.auth.existingSecret }}
{{- end }}
{{- end }}

{{/* Does the scheduler (or workers) get S3 credentials from a Secret? */}}
{{- define "strata.s3.hasCredentials" -}}
{{- if and .Values.s3.enabled (or .Values.s3.credentials.existingSecret .Values.s3.credentials.accessKeyId) }}true{{ end }}
{{- end }}

{{/* The --s3 URL: s3://BUCKET[/PREFIX][?endpoint=URL&region=R&path_style=true]. */}}
{{- define "strata.s3.url" -}}
{{- $q := list }}
{{- with .Values.s3.endpoint }}{{ $q = append $q (printf "endpoint=%s" .) }}{{ end }}
{{- with .Values.s3.region }}{{ $q = append $q (printf "region=%s" .) }}{{ end }}
{{- if .Values.s3.pathStyle }}{{ $q = append $q "path_style=true" }}{{ end }}
{{- $path := .Values.s3.bucket }}
{{- with .Values.s3.prefix }}{{ $path = printf "%s/%s" $path (trimPrefix "/" .) }}{{ end }}
{{- printf "s3://%s" $path }}{{ if $q }}?{{ join "&" $q }}{{ end }}
{{- end }}

{{/*
A Secret value that survives upgrades: the value already in the cluster if
the Secret exists (lookup; empty under `helm template`), else a new random
one. include with (dict "ctx" $ "secret" NAME "key" KEY "length" N).
*/}}
{{- define "strata.persistentRandom" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .secret }}
{{- if and $existing (hasKey $existing.data .key) }}
{{- index $existing.data .key | b64dec }}
{{- else }}
{{- randAlphaNum .length }}
{{- end }}
{{- end }}

{{/* Checks that stop an install with a clear message instead of a broken farm. */}}
{{- define "strata.validate" -}}
{{- if not (has .Values.redis.mode (list "bundled" "external" "none")) }}
{{- fail (printf "redis.mode must be bundled, external or none, not %q" .Values.redis.mode) }}
{{- end }}
{{- if and (eq .Values.redis.mode "external") (not (or .Values.redis.external.url .Values.redis.external.existingSecret)) }}
{{- fail "redis.mode=external needs redis.external.existingSecret (or redis.external.url)" }}
{{- end }}
{{- if and .Values.s3.enabled (not .Values.s3.bucket) }}
{{- fail "s3.enabled needs s3.bucket" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}
{{- fail "tls.enabled needs tls.existingSecret (a Secret with tls.crt, tls.key and ca.crt)" }}
{{- end }}
{{- if and .Values.tls.workerMTLS.enabled (not .Values.tls.enabled) }}
{{- fail "tls.workerMTLS.enabled needs tls.enabled" }}
{{- end }}
{{- if and .Values.tls.workerMTLS.enabled (not .Values.tls.workerMTLS.existingSecret) }}
{{- fail "tls.workerMTLS.enabled needs tls.workerMTLS.existingSecret (tls.crt, tls.key, ca.crt)" }}
{{- end }}
{{- if gt (int .Values.scheduler.replicas) 1 }}
{{- fail (printf "scheduler.replicas must be 1, not %d: the scheduler keeps running builds and the pins that keep prune from deleting their blobs in its own memory, and its image names on its state volume, so several replicas would lose builds and delete blobs in use" (int .Values.scheduler.replicas)) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (lt (int .Values.autoscaling.maxReplicas) (int .Values.autoscaling.minReplicas)) }}
{{- fail "autoscaling.maxReplicas must be >= autoscaling.minReplicas" }}
{{- end }}
{{- end }}
