{{/*
Names and labels, as `helm create` writes them.
*/}}

{{/*
Expand the name of the chart.
*/}}
{{- define "modelcycle-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A default fully qualified app name, truncated at 55 characters: the longest suffix the
chart appends is "-receiver" / "-alerts" plus "-namespaced", and names are DNS labels.
If the release name contains the chart name it is used as the full name.
*/}}
{{- define "modelcycle-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, as used by the chart label.
*/}}
{{- define "modelcycle-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels, on every object the chart renders.
*/}}
{{- define "modelcycle-operator.labels" -}}
helm.sh/chart: {{ include "modelcycle-operator.chart" . }}
{{ include "modelcycle-operator.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelcycle
{{- end }}

{{/*
Selector labels (immutable in a Deployment: never add anything that changes).
*/}}
{{- define "modelcycle-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelcycle-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The name of the service account to use.
*/}}
{{- define "modelcycle-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelcycle-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The Secret and key holding the receiver's bearer token.
*/}}
{{- define "modelcycle-operator.receiverSecretName" -}}
{{- if .Values.receiver.existingSecret }}
{{- .Values.receiver.existingSecret }}
{{- else }}
{{- printf "%s-receiver" (include "modelcycle-operator.fullname" .) }}
{{- end }}
{{- end }}

{{- define "modelcycle-operator.receiverSecretKey" -}}
{{- if .Values.receiver.existingSecret }}
{{- .Values.receiver.existingSecretKey }}
{{- else }}
{{- "token" }}
{{- end }}
{{- end }}

{{/*
The image references.
*/}}
{{- define "modelcycle-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "modelcycle-operator.workloadImage" -}}
{{- printf "%s:%s" .Values.workload.image.repository (default .Chart.AppVersion .Values.workload.image.tag) }}
{{- end }}

{{/*
Values that the schema cannot check on its own: refuse them with a message that says
what to do. Included by the Deployment, so every render runs it.
*/}}
{{- define "modelcycle-operator.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.peering.enabled) }}
{{- fail (printf "replicas=%d needs peering.enabled=true: without kopf's peering every operator pod would handle every ModelCycle and they would fight over it (set peering.enabled=true, or replicas=1)" (int .Values.replicas)) }}
{{- end }}
{{- if and .Values.receiver.existingSecret (not .Values.receiver.existingSecretKey) }}
{{- fail "receiver.existingSecretKey must name the key of the token in receiver.existingSecret" }}
{{- end }}
{{- if and (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) .Values.rbac.create }}
{{- fail "serviceAccount.create=false needs serviceAccount.name: the chart would otherwise bind its roles to the namespace's default ServiceAccount" }}
{{- end }}
{{- end }}

{{/*
The rules for the children and the ModelCycles, the same in the ClusterRole (cluster-wide
mode) and in each namespace's Role (namespaced mode).
*/}}
{{- define "modelcycle-operator.namespacedRules" -}}
# Application: watch the ModelCycles and keep kopf's bookkeeping on them (progress and
# last-handled annotations, the finalizer), all merge patches.
- apiGroups: [modelcycle.dev]
  resources: [modelcycles]
  verbs: [get, list, watch, patch]
# Application: write the status (conditions, champion, history) through the status
# subresource only.
- apiGroups: [modelcycle.dev]
  resources: [modelcycles/status]
  verbs: [get, patch, update]
# Application: the children carry an ownerReference with blockOwnerDeletion, which
# clusters running the OwnerReferencesPermissionEnforcement admission plugin allow only
# to who may update the owner's finalizers.
- apiGroups: [modelcycle.dev]
  resources: [modelcycles/finalizers]
  verbs: [update]
# Framework: kopf posts Events about handler errors; Application: the reconcile posts
# its own Events on the ModelCycle (what `kubectl describe mc` shows).
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# Application: the training and evaluation Jobs (created once per cycle, watched for
# completion, removed when a cycle is abandoned).
- apiGroups: [batch]
  resources: [jobs]
  verbs: [create, get, list, watch, delete]
# Application: read the Jobs' and serving pods' state and termination messages (the
# workload reports its results there); never created, changed or exec'd into.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
# Application: the artifact volume claim of each ModelCycle.
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [create, get, list, watch]
# Application: the serving Deployment (server-side apply is a patch; rollback and
# disabling serving update or delete it).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [create, get, list, watch, patch, update, delete]
# Application: the serving Service (server-side apply).
- apiGroups: [""]
  resources: [services]
  verbs: [create, get, list, watch, patch]
{{- end }}

{{/*
What kopf reads cluster-wide, in both modes (kopf's docs, "Deployment": runtime
observation of CRDs and namespaces). Without them kopf only warns, but then a CRD
upgrade or a new namespace goes unnoticed until the operator restarts.
*/}}
{{- define "modelcycle-operator.kopfClusterRules" -}}
# Framework: kopf watches the CRDs to notice that the ModelCycle CRD appears, changes
# or goes away (resource discovery itself needs no RBAC).
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- if .Values.watchNamespaces }}
# Framework: in namespaced mode kopf lists and watches namespaces to start and stop its
# watches as the served namespaces come and go (cluster-wide mode does not need this).
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
{{- end }}
