{{/* Chart name, truncated to the 63 characters a Kubernetes name allows. */}}
{{- define "ml-platform.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified name of the release: RELEASE-ml-platform, or RELEASE if it already contains the chart name. */}}
{{- define "ml-platform.fullname" -}}
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

{{/* Labels every object carries. */}}
{{- define "ml-platform.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: {{ include "ml-platform.name" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* Labels that select one service's pods, whatever their track (the Service sends traffic to
     stable and canary pods alike); call with (dict "root" $ "component" "proposer"). */}}
{{- define "ml-platform.serviceSelector" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels that select the stable Deployment's pods (a canary Deployment uses opsbook.io/track: canary). */}}
{{- define "ml-platform.selectorLabels" -}}
{{ include "ml-platform.serviceSelector" . }}
opsbook.io/track: stable
{{- end }}

{{/* Name of one service's objects: RELEASE-ml-platform-COMPONENT. */}}
{{- define "ml-platform.componentName" -}}
{{- printf "%s-%s" (include "ml-platform.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}
