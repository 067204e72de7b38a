{{/* Names, labels and computed settings shared by the templates. */}}

{{- define "grantbox.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "grantbox.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "grantbox.labels" -}}
{{ include "grantbox.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "grantbox.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "grantbox.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "grantbox.sandboxNamespace" -}}
{{- default .Release.Namespace .Values.sandboxes.namespace -}}
{{- end -}}

{{- define "grantbox.gatewayImage" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "grantbox.sandboxImage" -}}
{{- printf "%s:%s" .Values.sandboxes.image.repository (default .Chart.AppVersion .Values.sandboxes.image.tag) -}}
{{- end -}}

{{/* The URL sandbox pods dial: the configured one, else the Service's cluster DNS name. */}}
{{- define "grantbox.gatewayURL" -}}
{{- if .Values.gateway.url -}}
{{- .Values.gateway.url -}}
{{- else -}}
{{- printf "http://%s.%s.svc:%d" (include "grantbox.fullname" .) .Release.Namespace (int .Values.service.port) -}}
{{- end -}}
{{- end -}}

{{/* Where the gateway keeps keys, tokens and (with SQLite) its database. */}}
{{- define "grantbox.dataDir" -}}/var/lib/grantbox{{- end -}}

{{/*
The gateway pod, shared by the StatefulSet (SQLite) and the Deployment (PostgreSQL).
The gateway reads GRANTBOX_STATE_DIR / GRANTBOX_CONFIG_DIR (its settings) and the
GRANTBOX_K8S_* variables (the kubernetes driver) from the ConfigMap; --listen and --driver are
command-line options (the database URL comes from GRANTBOX_DB_URL) of `grantbox gateway serve`.
*/}}
{{- define "grantbox.podTemplate" -}}
metadata:
  labels:
    {{- include "grantbox.selectorLabels" . | nindent 4 }}
  annotations:
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
    {{- with .Values.gateway.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "grantbox.serviceAccountName" . }}
  automountServiceAccountToken: true
  enableServiceLinks: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 10001
    runAsGroup: 10001
    fsGroup: 10001
    seccompProfile:
      type: RuntimeDefault
  {{- if .Values.gateway.keys.existingSecret }}
  initContainers:
    # Secret volumes are group-readable under fsGroup; the gateway refuses key files that
    # anyone but their owner can read, so copy them into the data directory as 0600.
    - name: install-keys
      image: {{ include "grantbox.gatewayImage" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command: ["/bin/sh", "-ec"]
      args:
        - >-
          install -d -m 0700 {{ include "grantbox.dataDir" . }}/state {{ include "grantbox.dataDir" . }}/config &&
          install -m 0600 /keys/supervisor-signing-key.pem /keys/credentials.key {{ include "grantbox.dataDir" . }}/state/ &&
          install -m 0600 /keys/operator-token {{ include "grantbox.dataDir" . }}/config/
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: ["ALL"]
      volumeMounts:
        - name: data
          mountPath: {{ include "grantbox.dataDir" . }}
        - name: keys
          mountPath: /keys
          readOnly: true
  {{- end }}
  containers:
    - name: gateway
      image: {{ include "grantbox.gatewayImage" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      command: ["grantbox"]
      args:
        - gateway
        - serve
        - --listen
        - {{ printf "0.0.0.0:%d" (int .Values.gateway.port) | quote }}
        - --driver
        - kubernetes
      envFrom:
        - configMapRef:
            name: {{ include "grantbox.fullname" . }}
      {{- if eq .Values.database.type "postgresql" }}
      env:
        # Read by `gateway serve` from the environment, so the URL and its password never
        # appear on the command line.
        - name: GRANTBOX_DB_URL
          valueFrom:
            secretKeyRef:
              name: {{ .Values.database.postgresql.existingSecret }}
              key: {{ .Values.database.postgresql.urlKey }}
      {{- end }}
      ports:
        - name: http
          containerPort: {{ .Values.gateway.port }}
          protocol: TCP
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        periodSeconds: 5
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
        periodSeconds: 10
        failureThreshold: 6
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: ["ALL"]
      {{- with .Values.gateway.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: data
          mountPath: {{ include "grantbox.dataDir" . }}
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- if ne .Values.database.type "sqlite" }}
    - name: data
      emptyDir:
        sizeLimit: 64Mi
    {{- end }}
    {{- if .Values.gateway.keys.existingSecret }}
    - name: keys
      secret:
        secretName: {{ .Values.gateway.keys.existingSecret }}
        defaultMode: 0440
    {{- end }}
  {{- with .Values.gateway.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.gateway.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.gateway.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
