{{/* Chart name, truncated to the 63 characters DNS names allow. */}}
{{- define "kpiwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified app name: the release name, unless it already contains the chart name. */}}
{{- define "kpiwatch.fullname" -}}
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

{{- define "kpiwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kpiwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "kpiwatch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "kpiwatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "kpiwatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kpiwatch.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kpiwatch.configMapName" -}}
{{- default (include "kpiwatch.fullname" .) .Values.existingConfigMap -}}
{{- end -}}

{{- define "kpiwatch.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Where the writeTokenSecret is mounted, and the token file in it. */}}
{{- define "kpiwatch.writeTokenDir" -}}/etc/kpiwatch-write-token{{- end -}}
{{- define "kpiwatch.writeTokenFile" -}}{{ include "kpiwatch.writeTokenDir" . }}/token{{- end -}}

{{/* Where the webConfigSecret is mounted, and the web config file in it. */}}
{{- define "kpiwatch.webConfigDir" -}}/etc/kpiwatch-web{{- end -}}
{{- define "kpiwatch.webConfigFile" -}}{{ include "kpiwatch.webConfigDir" . }}/web.yml{{- end -}}

{{/* What the agent serves: https only with a web config that has TLS. */}}
{{- define "kpiwatch.scheme" -}}
{{- if and .Values.webConfigSecret .Values.webConfigTLS -}}https{{- else -}}http{{- end -}}
{{- end -}}

{{/*
The agent's config: .Values.config with server.listen forced to .Values.port, so that
the container port, the probes and the Service always agree with the agent, and
server.write_token_file and server.web_config_file forced to the mounted files when
.Values.writeTokenSecret and .Values.webConfigSecret are set.
*/}}
{{- define "kpiwatch.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $server := dict "listen" (printf "0.0.0.0:%v" .Values.port) -}}
{{- if .Values.writeTokenSecret -}}
{{- $_ := set $server "write_token_file" (include "kpiwatch.writeTokenFile" .) -}}
{{- end -}}
{{- if .Values.webConfigSecret -}}
{{- $_ := set $server "web_config_file" (include "kpiwatch.webConfigFile" .) -}}
{{- end -}}
{{- $_ := set $cfg "server" (mergeOverwrite (default dict $cfg.server) $server) -}}
{{- toYaml $cfg -}}
{{- end -}}
