{{/* Names and labels. */}}
{{- define "sse-sidecar.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sse-sidecar.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sse-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sse-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sse-sidecar.labels" -}}
{{ include "sse-sidecar.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The Secret holding the admin token. */}}
{{- define "sse-sidecar.secretName" -}}
{{- if .Values.admin.existingSecret -}}
{{- .Values.admin.existingSecret -}}
{{- else -}}
{{- printf "%s-admin" (include "sse-sidecar.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The sidecar's config file: .Values.config with the keys the chart owns set. */}}
{{- define "sse-sidecar.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $admin := deepCopy (default (dict) (index $cfg "admin")) -}}
{{- $_ := set $admin "listen" (printf "0.0.0.0:%v" .Values.ports.admin) -}}
{{- $_ := set $admin "token_env" "SSE_SIDECAR_ADMIN_TOKEN" -}}
{{- $shutdown := deepCopy (default (dict) (index $cfg "shutdown")) -}}
{{- $_ := set $shutdown "grace_period_seconds" .Values.shutdown.gracePeriodSeconds -}}
{{- $_ := set $shutdown "drain_window_seconds" .Values.shutdown.drainWindowSeconds -}}
{{- $_ := set $cfg "listen" (printf "0.0.0.0:%v" .Values.ports.http) -}}
{{- $_ := set $cfg "admin" $admin -}}
{{- $_ := set $cfg "shutdown" $shutdown -}}
{{- toYaml $cfg -}}
{{- end -}}
