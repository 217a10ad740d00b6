{{/*
Named templates shared by the chart's manifests and NOTES.txt.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "scim-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of object names: fullnameOverride, or "<release>-<chart>", or just the release name
when it already contains the chart name. Truncated to 63 characters because some names end up
in labels.
*/}}
{{- define "scim-operator.fullname" -}}
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

{{/* The chart label value: name and version. */}}
{{- define "scim-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The standard labels of every object the chart writes. */}}
{{- define "scim-operator.labels" -}}
helm.sh/chart: {{ include "scim-operator.chart" . }}
{{ include "scim-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The labels that select the operator's pods; they must never change between upgrades. */}}
{{- define "scim-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "scim-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "scim-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "scim-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: pinned by digest when one is given, else by tag. */}}
{{- define "scim-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Lease that elects the replica running the controller. */}}
{{- define "scim-operator.leaseName" -}}
{{- printf "%s-leader" (include "scim-operator.fullname" .) }}
{{- end }}

{{/*
The SCIM base URL the IdP uses: publicUrl, else https://<ingress.host>/scim/v2 when the ingress
is enabled (https even when TLS ends in front of the ingress, since IdPs only accept https),
else empty.
*/}}
{{- define "scim-operator.publicUrl" -}}
{{- if .Values.publicUrl }}
{{- trimSuffix "/" .Values.publicUrl }}
{{- else if .Values.ingress.enabled }}
{{- printf "https://%s/scim/v2" .Values.ingress.host }}
{{- end }}
{{- end }}

{{/*
The names of the allowed roles of one kind, as a JSON list. Call with
(dict "kind" "ClusterRole" "roles" .Values.allowedRoles).
*/}}
{{- define "scim-operator.allowedRoleNames" -}}
{{- $names := list }}
{{- range .roles }}
{{- $parts := splitn "/" 2 . }}
{{- if eq $parts._0 $.kind }}
{{- $names = append $names $parts._1 }}
{{- end }}
{{- end }}
{{- $names | uniq | toJson }}
{{- end }}

{{/* The Secret that holds the plaintext initial token until the admin deletes it. */}}
{{- define "scim-operator.initialTokenSecretName" -}}
{{- printf "%s-initial-token" (include "scim-operator.fullname" .) }}
{{- end }}

{{/* The token Secret of the initial token: its SHA-256 hash, which the operator checks. */}}
{{- define "scim-operator.initialTokenHashSecretName" -}}
{{- printf "%s-initial-token-sha256" (include "scim-operator.fullname" .) }}
{{- end }}

{{/*
The initial token of the first connection, as JSON {"sha256": "...", "token": "..."}; a field
is empty when that Secret must not be written. Decided once per render and remembered in the
root context, because two templates and NOTES.txt need the same random value.

- The hash Secret exists: keep its hash, so upgrades never change the token the IdP holds. Keep
  the plaintext Secret only while it still exists and matches (the admin deletes it once read).
- No hash Secret, first install: generate "scim_" + 48 random letters and digits.
- No hash Secret on an upgrade: the token was revoked on purpose; write nothing, so that an
  upgrade never brings a revoked token back. New tokens come from `scim-operator token create`.
*/}}
{{- define "scim-operator.initialToken" -}}
{{- if not (hasKey . "scimOperatorInitialToken") }}
{{- $state := dict "sha256" "" "token" "" }}
{{- if and .Values.initialToken.enabled .Values.connections }}
{{- $hashSecret := lookup "v1" "Secret" .Release.Namespace (include "scim-operator.initialTokenHashSecretName" .) }}
{{- $plainSecret := lookup "v1" "Secret" .Release.Namespace (include "scim-operator.initialTokenSecretName" .) }}
{{- $existingHash := dig "data" "sha256" "" $hashSecret | b64dec }}
{{- $existingToken := dig "data" "token" "" $plainSecret | b64dec }}
{{- if $existingHash }}
{{- $_ := set $state "sha256" $existingHash }}
{{- if and $existingToken (eq (sha256sum $existingToken) $existingHash) }}
{{- $_ := set $state "token" $existingToken }}
{{- end }}
{{- else if .Release.IsInstall }}
{{- $token := $existingToken | default (printf "scim_%s" (randAlphaNum 48)) }}
{{- $_ := set $state "token" $token }}
{{- $_ := set $state "sha256" (sha256sum $token) }}
{{- end }}
{{- end }}
{{- $_ := set . "scimOperatorInitialToken" $state }}
{{- end }}
{{- get . "scimOperatorInitialToken" | toJson }}
{{- end }}

{{/*
Checks that values.schema.json cannot express: unique connection names and tenants (one tenant
per IdP connection is the isolation boundary), and an ingress host when the ingress is on.
*/}}
{{- define "scim-operator.validate" -}}
{{- $names := list }}
{{- $tenants := list }}
{{- range .Values.connections }}
{{- if has .name $names }}
{{- fail (printf "connections: the name %q appears twice" .name) }}
{{- end }}
{{- if has .tenant $tenants }}
{{- fail (printf "connections: the tenant %q is used twice; each connection needs its own namespace" .tenant) }}
{{- end }}
{{- $names = append $names .name }}
{{- $tenants = append $tenants .tenant }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.host) }}
{{- fail "ingress.host is required when ingress.enabled is true" }}
{{- end }}
{{- end }}

{{/* The platform targets as the operator reads them: name=...,format=...,kind=...,namespace=...,object=...[,tenant=...], comma separated. */}}
{{- define "scim-operator.platformTargets" -}}
{{- $parts := list }}
{{- range .Values.platformTargets }}
{{- $one := printf "name=%s,format=%s,kind=%s,namespace=%s,object=%s" .name .format .kind .namespace .object }}
{{- if .tenant }}{{- $one = printf "%s,tenant=%s" $one .tenant }}{{- end }}
{{- $parts = append $parts $one }}
{{- end }}
{{- join "," $parts }}
{{- end }}
