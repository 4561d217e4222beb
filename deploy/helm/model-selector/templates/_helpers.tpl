{{/* Names and labels shared by every manifest. */}}

{{- define "model-selector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "model-selector.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "model-selector.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "model-selector.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "model-selector.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "model-selector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: include with (dict "root" . "component" "triton"). */}}
{{- define "model-selector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "model-selector.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "model-selector.triton" -}}{{ include "model-selector.fullname" . | trunc 56 }}-triton{{- end -}}
{{- define "model-selector.tritonHeadless" -}}{{ include "model-selector.triton" . | trunc 54 }}-headless{{- end -}}
{{- define "model-selector.gateway" -}}{{ include "model-selector.fullname" . | trunc 55 }}-gateway{{- end -}}

{{/* Every Triton pod's gRPC address: gRPC round-robin over the headless Service's records. */}}
{{- define "model-selector.tritonTargets" -}}
dns:///{{ include "model-selector.tritonHeadless" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}:8001
{{- end -}}

{{/* Whether to render a Prometheus Operator object: enabled true, or auto and the API is served. */}}
{{- define "model-selector.monitoringEnabled" -}}
{{- if or (eq (toString .enabled) "true") (and (eq (toString .enabled) "auto") (.root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}
true
{{- end -}}
{{- end -}}

{{- define "model-selector.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "model-selector.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "model-selector.modelRepositoryPath" -}}
{{- if eq .Values.triton.modelRepository.source "uri" -}}
{{ .Values.triton.modelRepository.uri }}
{{- else if eq .Values.triton.modelRepository.source "pvc" -}}
/models
{{- else -}}
{{ .Values.triton.modelRepository.imagePath }}
{{- end -}}
{{- end -}}
