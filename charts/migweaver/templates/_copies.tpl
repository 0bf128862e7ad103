{{/*
Objects copied from manifests/ (Helm reads no file outside the chart; files/ holds the
copies and tests/unit/project/test_chart.py keeps them byte for byte equal): each YAML
document of the file, its namespace the release's (also inside CEL expressions naming
service accounts), the chart's labels added. Called with (dict "root" . "file" PATH).
*/}}
{{- define "migweaver.copied" -}}
{{- $root := .root -}}
{{- $text := $root.Files.Get .file | replace "migweaver-system" $root.Release.Namespace -}}
{{- range $doc := splitList "\n---\n" $text }}
{{- $obj := fromYaml $doc }}
{{- if $obj }}
{{- $labels := merge (include "migweaver.labels" (dict "root" $root "component" ($obj.metadata.labels | default dict | dig "app.kubernetes.io/component" "operator")) | fromYaml) ($obj.metadata.labels | default dict) }}
{{- $_ := set $obj.metadata "labels" $labels }}
---
{{ toYaml $obj }}
{{- end }}
{{- end }}
{{- end -}}
