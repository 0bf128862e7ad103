{{/*
Object names are fixed, as in manifests/: the operator finds its ConfigMap
(migweaver-device-config), its leader election Lease (migweaver-operator) and the webhook's Service by
these names, and the cluster-scoped objects (ClusterRoles, the webhook, the admission
policy) exist once per cluster. Install one release per cluster.
*/}}

{{/* The labels every object carries; `component` is passed in. */}}
{{- define "migweaver.labels" -}}
app.kubernetes.io/name: migweaver
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: migweaver
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* Selector labels: equal to manifests/ (a Deployment's selector cannot change). */}}
{{- define "migweaver.selector" -}}
app.kubernetes.io/name: migweaver
app.kubernetes.io/component: {{ . }}
{{- end -}}

{{- define "migweaver.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{/* The webhook's Service DNS name, as the API server calls it. */}}
{{- define "migweaver.webhookHost" -}}
migweaver-operator.{{ .Release.Namespace }}.svc
{{- end -}}

{{/* The Secret holding tls.crt and tls.key for the webhook server. */}}
{{- define "migweaver.webhookSecret" -}}
{{- if eq .Values.webhook.certificate.source "existingSecret" -}}
{{ required "webhook.certificate.existingSecret.name is required with source existingSecret" .Values.webhook.certificate.existingSecret.name }}
{{- else -}}
migweaver-webhook-tls
{{- end -}}
{{- end -}}
