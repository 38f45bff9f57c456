{{/*
Chart name, truncated to 63 characters (DNS label limit).
*/}}
{{- define "tessera.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-<chart>, or <release> when it already contains the chart name.
Truncated to 55 characters so that suffixed names (-metrics, -migrate, -headless, -test)
stay within the 63-character limit.
*/}}
{{- define "tessera.fullname" -}}
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

{{- define "tessera.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "tessera.labels" -}}
helm.sh/chart: {{ include "tessera.chart" . }}
{{ include "tessera.selectorLabels" . }}
app.kubernetes.io/version: {{ include "tessera.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tessera
{{- end }}

{{/*
Labels shared by every pod of the release. Never used alone as a selector for the server
pods: add the component (see tessera.serverSelectorLabels), so that migration and test pods
are never picked up by the Service, the PodDisruptionBudget or the Deployment.
*/}}
{{- define "tessera.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tessera.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tessera.serverSelectorLabels" -}}
{{ include "tessera.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "tessera.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tessera.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
ServiceAccount of the migration hook pod: it runs before the chart's own ServiceAccount
exists on first install, so that one is only used when the chart does not create it.
*/}}
{{- define "tessera.migrationsServiceAccountName" -}}
{{- if .Values.migrations.serviceAccountName }}
{{- .Values.migrations.serviceAccountName }}
{{- else if not .Values.serviceAccount.create }}
{{- include "tessera.serviceAccountName" . }}
{{- else }}
{{- "default" }}
{{- end }}
{{- end }}

{{- define "tessera.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "tessera.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "tessera.imageTag" .) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding database-url and key-encryption-key.
*/}}
{{- define "tessera.secretName" -}}
{{- default (include "tessera.fullname" .) .Values.existingSecret }}
{{- end }}

{{/*
True (non-empty) when the service has what it needs to start.
*/}}
{{- define "tessera.secretsConfigured" -}}
{{- if or .Values.existingSecret (and .Values.secrets.databaseUrl .Values.secrets.keyEncryptionKey) }}true{{ end }}
{{- end }}

{{/*
Secret data (base64), shared by the release Secret and the migration hook Secret. Only
keys that have a value are written: a missing key makes the pods fail to start with
"references non-existent secret key", which names the problem.
*/}}
{{- define "tessera.secretData" -}}
{{- with .Values.secrets.databaseUrl }}
database-url: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.secrets.keyEncryptionKey }}
key-encryption-key: {{ . | b64enc | quote }}
{{- end }}
{{- end }}

{{/*
Where the Secret is mounted, and the *_FILE variables pointing into it.
*/}}
{{- define "tessera.secretMountPath" -}}
/etc/tessera/secrets
{{- end }}

{{- define "tessera.secretEnv" -}}
- name: TESSERA_DATABASE_URL_FILE
  value: {{ include "tessera.secretMountPath" . }}/database-url
- name: TESSERA_KEY_ENCRYPTION_KEY_FILE
  value: {{ include "tessera.secretMountPath" . }}/key-encryption-key
{{- end }}

{{/*
Secret volume (projected keys only), given the Secret's name as .secretName in a dict
with the root context as .root.
*/}}
{{- define "tessera.secretVolume" -}}
- name: secrets
  secret:
    secretName: {{ .secretName }}
    defaultMode: 288 # 0440: owner root, group fsGroup
    items:
      - key: database-url
        path: database-url
      - key: key-encryption-key
        path: key-encryption-key
{{- end }}

{{/*
Replicas that will run at least (for the PodDisruptionBudget decision).
*/}}
{{- define "tessera.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.minReplicas | int }}{{ else }}{{ .Values.replicaCount | int }}{{ end }}
{{- end }}

{{/*
Cross-value checks that a JSON schema cannot express. Included by the Deployment.
*/}}
{{- define "tessera.validate" -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.config.drainTimeoutSeconds) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than config.drainTimeoutSeconds (%d): the kubelet would kill pods in the middle of their drain" (int .Values.terminationGracePeriodSeconds) (int .Values.config.drainTimeoutSeconds)) }}
{{- end }}
{{- if and .Values.existingSecret (or .Values.secrets.databaseUrl .Values.secrets.keyEncryptionKey) }}
{{- fail "set either existingSecret or secrets.databaseUrl/secrets.keyEncryptionKey, not both" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not .Values.autoscaling.targetCPUUtilizationPercentage) (not .Values.autoscaling.targetMemoryUtilizationPercentage) }}
{{- fail "autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) }}
{{- fail "podDisruptionBudget: set maxUnavailable or minAvailable, not both (set the other to null)" }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) }}
{{- fail "ingress.enabled needs at least one entry in ingress.hosts" }}
{{- end }}
{{- $ports := list (int .Values.ports.grpc) (int .Values.ports.http) (int .Values.ports.ops) }}
{{- if ne (len (uniq $ports)) 3 }}
{{- fail "ports.grpc, ports.http and ports.ops must be three different ports" }}
{{- end }}
{{- end }}

{{/*
NetworkPolicy egress: DNS and PostgreSQL (an empty peer list means any destination).
*/}}
{{- define "tessera.egressRules" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
  {{- with .Values.networkPolicy.egress.dnsTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
- ports:
    - port: {{ .Values.networkPolicy.egress.databasePort }}
      protocol: TCP
  {{- with .Values.networkPolicy.egress.databaseTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
