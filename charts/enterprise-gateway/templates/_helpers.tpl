{{/* Namespace of the namespaced resources: `namespace`, else the release namespace. */}}
{{- define "eg.namespace" -}}
{{- default .Release.Namespace .Values.namespace -}}
{{- end -}}

{{/* `chart` label: name-version, `+` replaced (label values cannot hold it). */}}
{{- define "eg.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource; `component` given by the caller, then global.commonLabels. */}}
{{- define "eg.labels" -}}
{{- $root := .root -}}
app: enterprise-gateway
component: {{ .component }}
chart: {{ include "eg.chart" $root }}
release: {{ $root.Release.Name }}
heritage: {{ $root.Release.Service }}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
helm.sh/chart: {{ include "eg.chart" $root }}
{{- with $root.Values.global.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* "True"/"False", the spelling the gateway's boolean variables take. */}}
{{- define "eg.pybool" -}}
{{- if . }}True{{ else }}False{{ end -}}
{{- end -}}

{{/* Name of the Secret holding authToken. */}}
{{- define "eg.authSecret" -}}
{{- printf "%s-auth-token" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Kernelspec source: "image", "nfs", "pvc" or ""; fails when more than one is chosen. */}}
{{- define "eg.kernelspecSource" -}}
{{- $chosen := list -}}
{{- if .Values.kernelspecs.image }}{{ $chosen = append $chosen "kernelspecs.image" }}{{ end -}}
{{- if .Values.nfs.enabled }}{{ $chosen = append $chosen "nfs.enabled" }}{{ end -}}
{{- if .Values.kernelspecsPvc.enabled }}{{ $chosen = append $chosen "kernelspecsPvc.enabled" }}{{ end -}}
{{- if gt (len $chosen) 1 -}}
{{- fail (printf "kernelspecs: %s are mutually exclusive (all mount /usr/local/share/jupyter/kernels); set only one" (join " and " $chosen)) -}}
{{- end -}}
{{- if .Values.kernelspecs.image -}}image
{{- else if .Values.nfs.enabled -}}
{{- if not .Values.nfs.internalServerIPAddress }}{{ fail "nfs.internalServerIPAddress is required when nfs.enabled is true" }}{{ end -}}
nfs
{{- else if .Values.kernelspecsPvc.enabled -}}
{{- if not .Values.kernelspecsPvc.name }}{{ fail "kernelspecsPvc.name is required when kernelspecsPvc.enabled is true" }}{{ end -}}
pvc
{{- end -}}
{{- end -}}

{{/* Fetchers the KIP runs, as a list: kip.fetcher, or kip.internalFetcher for the combined one. */}}
{{- define "kip.fetchers" -}}
{{- if eq .Values.kip.fetcher "CombinedImagesFetcher" -}}
{{- include "kip.commaList" (dict "value" .Values.kip.internalFetcher "key" "kip.internalFetcher") -}}
{{- else -}}
{{- .Values.kip.fetcher -}}
{{- end -}}
{{- end -}}

{{/* A value given as a list or as a comma string, rendered as a trimmed comma string. */}}
{{- define "kip.commaList" -}}
{{- $items := list -}}
{{- if kindIs "slice" .value -}}
{{- $items = .value -}}
{{- else if kindIs "string" .value -}}
{{- $items = splitList "," .value -}}
{{- else if not (kindIs "invalid" .value) -}}
{{- fail (printf "%s must be a list or a comma-separated string, got %s" .key (kindOf .value)) -}}
{{- end -}}
{{- $out := list -}}
{{- range $items }}{{ $s := trim (toString .) }}{{ if $s }}{{ $out = append $out $s }}{{ end }}{{ end -}}
{{- join "," $out -}}
{{- end -}}

{{/* Whether the KIP reads a ConfigMap ("true" or ""). */}}
{{- define "kip.usesConfigMap" -}}
{{- if has "ConfigMapImagesFetcher" (splitList "," (include "kip.fetchers" .)) }}true{{ end -}}
{{- end -}}

{{/* Pull secrets the KIP mounts: global.imagePullSecrets then kip.pullSecrets, without repeats. */}}
{{- define "kip.pullSecrets" -}}
{{- $names := list -}}
{{- range (concat .Values.global.imagePullSecrets .Values.kip.pullSecrets) -}}
{{- $n := . -}}
{{- if kindIs "map" . }}{{ $n = .name }}{{ end -}}
{{- if and $n (not (has $n $names)) }}{{ $names = append $names $n }}{{ end -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{/* Pod imagePullSecrets from global.imagePullSecrets (names or {name} maps). */}}
{{- define "eg.podPullSecrets" -}}
{{- with .Values.global.imagePullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ if kindIs "map" . }}{{ .name }}{{ else }}{{ . }}{{ end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Whether the KIP's PodSecurityPolicy is rendered ("true" or ""). */}}
{{- define "kip.pspRendered" -}}
{{- if and .Values.kip.podSecurityPolicy.create .Values.global.rbac .Values.kip.serviceAccountName (.Capabilities.APIVersions.Has "policy/v1beta1/PodSecurityPolicy") }}true{{ end -}}
{{- end -}}

{{/* Service account of the gateway: global.serviceAccountName, else deployment.serviceAccountName. */}}
{{- define "eg.serviceAccount" -}}
{{- .Values.global.serviceAccountName | default .Values.deployment.serviceAccountName -}}
{{- end -}}

{{/*
The host directory of the runtime's images the KIP mounts read-only for its disk guard:
kip.imageFsHostPath, where `auto` is /var/lib/docker for a docker socket, else /var/lib/containerd;
empty for none.
*/}}
{{- define "kip.imageFs" -}}
{{- $path := .Values.kip.imageFsHostPath | default "" -}}
{{- if eq $path "auto" -}}
{{- $path = ternary "/var/lib/docker" "/var/lib/containerd" (contains "docker" .Values.kip.criSocket) -}}
{{- end -}}
{{- $path -}}
{{- end -}}

{{/*
Whether the gateway image is Enterprise Gateway's own ("true" or ""): deployment.imageKind, where
`auto` means upstream's when the image reference contains `elyra/enterprise-gateway`.
*/}}
{{- define "eg.upstreamImage" -}}
{{- $kind := .Values.deployment.imageKind | default "auto" -}}
{{- if eq $kind "upstream" -}}true
{{- else if and (eq $kind "auto") (contains "elyra/enterprise-gateway" (toString .Values.image)) -}}true
{{- end -}}
{{- end -}}
