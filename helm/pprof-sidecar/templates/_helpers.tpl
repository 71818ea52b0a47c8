{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "pprof-sidecar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified release prefix of every object name. */}}
{{- define "pprof-sidecar.fullname" -}}
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

{{- define "pprof-sidecar.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels (Kubernetes recommended labels + helm.sh/chart). */}}
{{- define "pprof-sidecar.labels" -}}
helm.sh/chart: {{ include "pprof-sidecar.chart" . }}
{{ include "pprof-sidecar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pprof-sidecar
{{- end }}

{{/* Labels selecting the webhook pods. */}}
{{- define "pprof-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pprof-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end }}

{{- define "pprof-sidecar.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "pprof-sidecar.webhookService" -}}
{{- printf "%s-webhook" (include "pprof-sidecar.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pprof-sidecar.tlsSecret" -}}
{{- printf "%s-webhook-tls" (include "pprof-sidecar.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
