{{- define "bonito.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bonito.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "bonito.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "bonito.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "bonito.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "bonito.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
bonito.dev/mode: {{ .Values.mode }}
{{- end -}}

{{- define "bonito.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bonito.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bonito.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bonito.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "bonito.image" -}}
{{- $repo := .Values.image.repository -}}
{{- if not $repo -}}
{{- $repo = ternary "ghcr.io/bonito/gateway-agent" "ghcr.io/bonito/platform" (eq .Values.mode "agent") -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The main container's port: the agent and the platform's web both listen on 8000. */}}
{{- define "bonito.port" -}}8000{{- end -}}

{{- define "bonito.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "bonito.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Settings every platform container shares (web, worker, beat, migrations). */}}
{{- define "bonito.platformEnv" -}}
- name: ALLOWED_HOSTS
  value: {{ join "," .Values.platform.allowedHosts | quote }}
- name: PUBLIC_BASE_URL
  value: {{ .Values.platform.publicBaseUrl | quote }}
- name: BEHIND_PROXY
  value: "1"
- name: WEB_CONCURRENCY
  value: {{ .Values.platform.webConcurrency | quote }}
{{- range $name, $value := .Values.platform.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{- define "bonito.platformEnvFrom" -}}
- secretRef:
    name: {{ .Values.platform.existingSecret }}
{{- end -}}

{{- define "bonito.platformVolumes" -}}
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: 64Mi
- name: var
  emptyDir:
    sizeLimit: {{ .Values.platform.varSizeLimit }}
{{- end -}}

{{- define "bonito.platformVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: var
  mountPath: /app/var
{{- end -}}

{{- define "bonito.scheduling" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Checkov findings this chart accepts on purpose, each with its reason (metadata annotations
     checkov reads). Call with (dict "root" $ "role" "web|agent|worker|beat|migrate"). */}}
{{- define "bonito.checkovSkips" -}}
{{- $skips := list
  "CKV_K8S_11=No CPU limit on purpose: CFS throttling adds latency to every request; requests reserve the CPU and the HPA scales on it"
  "CKV_K8S_15=IfNotPresent is right for an immutable tag or a digest; set image.pullPolicy to Always for a moving tag" -}}
{{- if not .root.Values.image.digest -}}
{{- $skips = append $skips "CKV_K8S_43=Pinned by tag here; set image.digest to pin by digest (docs/deploy.md recommends it)" -}}
{{- end -}}
{{- if or (ne .role "agent") .root.Values.agent.redisUrlSecret.name -}}
{{- $skips = append $skips "CKV_K8S_35=The app reads these settings (SECRET_KEY, DATABASE_URL, BONITO_REDIS_URL) from the environment only; the values stay in the named Secret" -}}
{{- end -}}
{{- if or (eq .role "worker") (eq .role "beat") -}}
{{- $skips = append $skips "CKV_K8S_9=A Celery worker or beat serves no traffic, so there is nothing to be ready for" -}}
{{- end -}}
{{- if eq .role "beat" -}}
{{- $skips = append $skips "CKV_K8S_8=beat has no endpoint to probe; Kubernetes restarts it when the process exits" -}}
{{- end -}}
{{- range $i, $skip := $skips }}
checkov.io/skip{{ add1 $i }}: {{ $skip | quote }}
{{- end }}
{{- end -}}
