{{/*
The chart's name.
*/}}
{{- define "ghost.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's base name: the release name when it already contains the chart name
(release "ghost" gives "ghost", so objects are named ghost-operator, ghost-engine, ...).
*/}}
{{- define "ghost.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Names of the objects.
*/}}
{{- define "ghost.operatorName" -}}
{{- printf "%s-operator" (include "ghost.fullname" .) }}
{{- end }}

{{- define "ghost.engineRoleName" -}}
{{- printf "%s-engine" (include "ghost.fullname" .) }}
{{- end }}

{{- define "ghost.metricsServiceName" -}}
{{- printf "%s-operator-metrics" (include "ghost.fullname" .) }}
{{- end }}

{{/*
The Lease of leader election (--lease-name; the leader-election Role names it).
*/}}
{{- define "ghost.leaseName" -}}
{{- include "ghost.operatorName" . }}
{{- end }}

{{- define "ghost.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "ghost.labels" -}}
helm.sh/chart: {{ include "ghost.chart" . }}
app.kubernetes.io/name: {{ include "ghost.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ghost
{{- end }}

{{/*
The operator pods' selector. The component label keeps engine pods (name=ghost, component=engine)
out of it.
*/}}
{{- define "ghost.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "ghost.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "ghost.operatorLabels" -}}
{{ include "ghost.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "ghost.engineLabels" -}}
{{ include "ghost.labels" . }}
app.kubernetes.io/component: engine
{{- end }}

{{/*
The ghost image (operator, and engines unless engine.image is set).
*/}}
{{- define "ghost.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "ghost.engineImage" -}}
{{- default (include "ghost.image" .) .Values.engine.image }}
{{- end }}

{{/*
Leader election is on when asked for, or when there is more than one replica.
Renders "true" or "".
*/}}
{{- define "ghost.leaderElect" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicas) 1) }}true{{- end }}
{{- end }}

{{/*
The namespaces that get the engine service account and its RoleBinding.
Renders a JSON list.
*/}}
{{- define "ghost.engineNamespaces" -}}
{{- if .Values.watchNamespace }}
{{- range .Values.engine.namespaces }}
{{- if ne . $.Values.watchNamespace }}
{{- fail (printf "engine.namespaces lists %q, but the operator only watches watchNamespace %q: migrations elsewhere never run" . $.Values.watchNamespace) }}
{{- end }}
{{- end }}
{{- toJson (list .Values.watchNamespace) }}
{{- else if .Values.engine.namespaces }}
{{- toJson (uniq .Values.engine.namespaces) }}
{{- else }}
{{- toJson (list .Release.Namespace) }}
{{- end }}
{{- end }}
