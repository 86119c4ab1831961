{{/* Names, labels and the derived settings shared by the templates. */}}

{{- define "cognition.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: <release>-<chart> unless the release name already holds it. */}}
{{- define "cognition.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* <fullname>-<component>; call with (dict "root" $ "component" "gateway"). */}}
{{- define "cognition.componentName" -}}
{{- printf "%s-%s" (include "cognition.fullname" .root | trunc 50 | trimSuffix "-") .component -}}
{{- end -}}

{{- define "cognition.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cognition.labels" -}}
helm.sh/chart: {{ include "cognition.chart" . }}
{{ include "cognition.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cognition
{{- end -}}

{{- define "cognition.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cognition.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one component; call with (dict "root" $ "component" "gateway"). */}}
{{- define "cognition.componentLabels" -}}
{{ include "cognition.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "cognition.componentSelectorLabels" -}}
{{ include "cognition.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "cognition.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cognition.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image of a component: (dict "root" $ "component" "gateway" "values" .Values.gateway). */}}
{{- define "cognition.image" -}}
{{- $repo := default (printf "%s/cognition-%s" .root.Values.image.registry .component) .values.image.repository -}}
{{- $tag := default (default .root.Chart.AppVersion .root.Values.image.tag) .values.image.tag -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{/* The namespace of sandbox claims / pods. */}}
{{- define "cognition.sandboxNamespace" -}}
{{- default .Release.Namespace .Values.config.sandbox.k8s.namespace -}}
{{- end -}}

{{- define "cognition.k8sBackend" -}}
{{- if eq .Values.config.sandbox.backend "kubernetes" -}}true{{- end -}}
{{- end -}}

{{- define "cognition.routerUrl" -}}
{{- default (printf "http://sandbox-router-svc.%s.svc.cluster.local:8080" (include "cognition.sandboxNamespace" .)) .Values.config.sandbox.k8s.routerUrl -}}
{{- end -}}

{{- define "cognition.podSandboxImage" -}}
{{- default (printf "%s/cognition-sandbox:%s" .Values.image.registry (default .Chart.AppVersion .Values.image.tag)) .Values.config.sandbox.k8s.pod.image -}}
{{- end -}}

{{/* The Secret holding llm-api-key / database-url / agent-token. */}}
{{- define "cognition.secretName" -}}
{{- default (include "cognition.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Whether the chart renders its own Secret: no existingSecret and at least one value. */}}
{{- define "cognition.createSecret" -}}
{{- if and (not .Values.secrets.existingSecret) (or .Values.llm.apiKey .Values.persistence.postgres.url .Values.config.sandbox.k8s.agentToken) -}}true{{- end -}}
{{- end -}}

{{/* Whether an llm-api-key can be found (chart Secret with the key, or an existing Secret). */}}
{{- define "cognition.hasLlmKey" -}}
{{- if or .Values.secrets.existingSecret .Values.llm.apiKey -}}true{{- end -}}
{{- end -}}

{{/* The label selecting sandbox pods for the NetworkPolicy, per mode. */}}
{{- define "cognition.sandboxPodSelector" -}}
{{- if eq .Values.config.sandbox.k8s.mode "pod" -}}
cognition.dev/role: sandbox
{{- else -}}
agents.x-k8s.io/sandbox: "true"
{{- end -}}
{{- end -}}

{{/* The claim name of the SQLite volume. */}}
{{- define "cognition.sqliteClaim" -}}
{{- default (include "cognition.componentName" (dict "root" . "component" "session-data")) .Values.persistence.sqlite.persistentVolume.existingClaim -}}
{{- end -}}

{{/* Pod settings shared by the Deployments: (dict "root" $ "values" .Values.gateway). */}}
{{- define "cognition.podCommon" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
