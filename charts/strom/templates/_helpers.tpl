{{/* Name of the chart's objects: the release name, or release-chart when they differ. */}}
{{- define "strom.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "strom.labels" -}}
app.kubernetes.io/name: strom-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "strom.selectorLabels" -}}
app.kubernetes.io/name: strom-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "strom.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "strom.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "strom.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Rules for the resources the operator manages in the namespaces it watches. */}}
{{- define "strom.managedRules" -}}
- apiGroups: ["strom.dev"]
  resources: ["kafkaclusters"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["strom.dev"]
  resources: ["kafkaclusters/status"]
  verbs: ["get", "patch"]
# Topics and ConsumerGroups: patch only to add and remove the operator's finalizer
# (a JSON patch of metadata.finalizers; no update, and no finalizers subresource,
# which only owner references with blockOwnerDeletion need).
- apiGroups: ["strom.dev"]
  resources: ["topics", "consumergroups"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["strom.dev"]
  resources: ["topics/status", "consumergroups/status"]
  verbs: ["get", "patch"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Pods: delete, for rolling restarts (the StatefulSets are OnDelete).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
