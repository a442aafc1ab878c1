{{/*
Helpers shared by the component templates. Most take a dict:
  root       the top-level context ($)
  component  "gateway", "inference" or "registry" (also the key of its values section)
Numbers from values are float64 inside templates: pass them through int before printing.
*/}}

{{- define "maas.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "maas.fullname" -}}
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

{{/* <fullname>-<component>; dict: root, component */}}
{{- define "maas.componentName" -}}
{{- printf "%s-%s" (include "maas.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* dict: root, component */}}
{{- define "maas.selectorLabels" -}}
app.kubernetes.io/name: {{ include "maas.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* dict: root, component */}}
{{- define "maas.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "maas.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: maas
{{- end }}

{{/* The image reference; dict: root, gpu (bool) */}}
{{- define "maas.image" -}}
{{- $tag := .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- if .gpu }}
{{- $gpu := .root.Values.inference.gpu.image }}
{{- printf "%s:%s" ($gpu.repository | default .root.Values.image.repository) ($gpu.tag | default (printf "%s-gpu" $tag)) }}
{{- else }}
{{- printf "%s:%s" .root.Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Service DNS names and addresses; dict: root, component */}}
{{- define "maas.serviceHost" -}}
{{- printf "%s.%s.svc.%s" (include "maas.componentName" .) .root.Release.Namespace .root.Values.clusterDomain }}
{{- end }}

{{- define "maas.registryAddress" -}}
{{- printf "%s:%d" (include "maas.serviceHost" (dict "root" . "component" "registry")) (int .Values.registry.service.port) }}
{{- end }}

{{- define "maas.gatewayAddress" -}}
{{- printf "%s:%d" (include "maas.serviceHost" (dict "root" . "component" "gateway")) (int .Values.gateway.service.port) }}
{{- end }}

{{- define "maas.inferenceHeadlessName" -}}
{{- include "maas.componentName" (dict "root" . "component" "inference-headless") }}
{{- end }}

{{/* Secrets: the one the chart generates, and which one each consumer reads. */}}
{{- define "maas.authSecretName" -}}
{{- include "maas.componentName" (dict "root" . "component" "auth") }}
{{- end }}

{{- define "maas.registryAuthSecret" -}}
{{- .Values.registry.auth.existingSecret | default (include "maas.authSecretName" .) }}
{{- end }}

{{- define "maas.gatewayAuthSecret" -}}
{{- .Values.gateway.auth.existingSecret | default (include "maas.authSecretName" .) }}
{{- end }}

{{- define "maas.inferenceAuthSecret" -}}
{{- .Values.inference.auth.existingSecret | default (include "maas.authSecretName" .) }}
{{- end }}

{{/* env entry: the service token (the gateway sends it, inference checks it); dict: root, name */}}
{{- define "maas.serviceTokenEnv" -}}
{{- if .root.Values.inference.auth.enabled -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "maas.inferenceAuthSecret" .root }}
      key: service-token
{{- end }}
{{- end }}

{{/* env entries: the reader token for registry clients (gateway, inference); dict: root, name */}}
{{- define "maas.readerTokenEnv" -}}
{{- if .root.Values.registry.auth.enabled -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "maas.registryAuthSecret" .root }}
      key: reader-token
{{- end }}
{{- end }}

{{/* Settings every service reads (MAAS_<SVC>_*) and OpenTelemetry; dict: root, component */}}
{{- define "maas.commonEnv" -}}
{{- $v := index .root.Values .component -}}
{{- $p := printf "MAAS_%s_" (upper .component) -}}
- name: {{ $p }}PORT
  value: {{ int $v.ports.grpc | quote }}
- name: {{ $p }}METRICS_PORT
  value: {{ int $v.ports.metrics | quote }}
- name: {{ $p }}MAX_MESSAGE_BYTES
  value: {{ int64 $v.maxMessageBytes | quote }}
- name: {{ $p }}GRACE_SECONDS
  value: {{ int $v.shutdown.graceSeconds | quote }}
- name: {{ $p }}LOG_LEVEL
  value: {{ $v.logLevel | quote }}
{{- with .root.Values.otel }}
{{- if .endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .endpoint | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "maas-%s" $.component | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ .sampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .samplerArg | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Container ports, probes, lifecycle; dict: root, component */}}
{{- define "maas.containerPorts" -}}
{{- $v := index .root.Values .component -}}
- name: grpc
  containerPort: {{ int $v.ports.grpc }}
  protocol: TCP
- name: metrics
  containerPort: {{ int $v.ports.metrics }}
  protocol: TCP
{{- end }}

{{/* Native gRPC probes on grpc.health.v1. Startup and liveness ask for service ""
(the process is up and not draining); readiness asks for the component's API service,
which reports SERVING only while it can serve (models loaded, backends healthy). */}}
{{- define "maas.probes" -}}
{{- if .root.Values.tls.enabled -}}
{{- include "maas.tlsProbes" . -}}
{{- else -}}
{{- $v := index .root.Values .component -}}
{{- $api := dict "gateway" "inference.GRPCInferenceService" "inference" "inference.GRPCInferenceService" "registry" "maas.registry.v1.ModelRegistry" -}}
{{- range $kind := list "startup" "readiness" "liveness" }}
{{- $probe := index $v.probes $kind }}
{{ $kind }}Probe:
  {{- if and (eq $kind "readiness") (eq $.component "gateway") $probe.http }}
  {{- if $.root.Values.gateway.auth.enabled }}
  {{- fail "gateway.probes.readiness.http needs gateway.auth.enabled=false: a probe carries no API key" }}
  {{- end }}
  httpGet:
    path: /v2/health/ready
    port: http
  {{- else }}
  grpc:
    port: {{ int $v.ports.grpc }}
    {{- if eq $kind "readiness" }}
    service: {{ index $api $.component }}
    {{- end }}
  {{- end }}
  {{- range $key := list "initialDelaySeconds" "periodSeconds" "timeoutSeconds" "failureThreshold" }}
  {{- if hasKey $probe $key }}
  {{ $key }}: {{ int (index $probe $key) }}
  {{- end }}
  {{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "maas.lifecycle" -}}
{{- $v := index .root.Values .component -}}
{{- if gt (int $v.shutdown.preStopSleepSeconds) 0 -}}
lifecycle:
  preStop:
    exec:
      command: ["sleep", {{ int $v.shutdown.preStopSleepSeconds | quote }}]
{{- end }}
{{- end }}

{{- define "maas.terminationGracePeriod" -}}
{{- $s := (index .root.Values .component).shutdown -}}
{{- add (int $s.preStopSleepSeconds) (int $s.graceSeconds) (int $s.marginSeconds) }}
{{- end }}

{{- define "maas.containerSecurityContext" -}}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end }}

{{/* Pod-level scheduling and security; dict: root, component, matchLabelKeys (list) */}}
{{- define "maas.podCommon" -}}
{{- $v := index .root.Values .component -}}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $v.topologySpread.enabled }}
topologySpreadConstraints:
  - maxSkew: {{ int $v.topologySpread.maxSkew }}
    topologyKey: {{ $v.topologySpread.topologyKey }}
    whenUnsatisfiable: {{ $v.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "maas.selectorLabels" . | nindent 8 }}
    {{- with .matchLabelKeys }}
    matchLabelKeys:
      {{- toYaml . | nindent 6 }}
    {{- end }}
{{- end }}
{{- end }}

{{/* Pod annotations: Prometheus scrape hints and the user's own; dict: root, component */}}
{{- define "maas.podAnnotations" -}}
{{- $v := index .root.Values .component -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ int $v.ports.metrics | quote }}
prometheus.io/path: /metrics
{{- if .root.Values.tls.enabled }}
prometheus.io/scheme: https
{{- end }}
{{- with $v.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The ingress rule for metrics scrapers, if any are configured; dict: root, component */}}
{{- define "maas.metricsIngress" -}}
{{- $v := index .root.Values .component -}}
{{- with .root.Values.networkPolicy.metricsFrom }}
- from:
    {{- toYaml . | nindent 4 }}
  ports:
    - port: {{ int $v.ports.metrics }}
      protocol: TCP
{{- end }}
{{- end }}

{{/* autoscaling/v2 HPA for a Deployment; dict: root, component, minReplicas (optional
override: the replicated registry's floor of 2), metrics (optional: GPU inference's) */}}
{{- define "maas.hpa" -}}
{{- $v := index .root.Values .component -}}
{{- $a := $v.autoscaling }}
{{- /* .metrics (GPU pods): targetCPUUtilizationPercentage and podsMetric in place of autoscaling's. */}}
{{- $m := .metrics | default $a }}
{{- if and (not $m.targetCPUUtilizationPercentage) (not $m.podsMetric.enabled) }}
{{- fail (printf "%s autoscaling: set targetCPUUtilizationPercentage or enable podsMetric" .component) }}
{{- end }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "maas.componentName" . }}
  labels:
    {{- include "maas.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "maas.componentName" . }}
  {{- $min := int (.minReplicas | default $a.minReplicas) }}
  minReplicas: {{ $min }}
  maxReplicas: {{ max $min (int $a.maxReplicas) }}
  metrics:
    {{- if $m.targetCPUUtilizationPercentage }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ int $m.targetCPUUtilizationPercentage }}
    {{- end }}
    {{- if $m.podsMetric.enabled }}
    - type: Pods
      pods:
        metric:
          name: {{ $m.podsMetric.name }}
        target:
          type: AverageValue
          averageValue: {{ $m.podsMetric.averageValue | quote }}
    {{- end }}
  {{- with $a.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* policy/v1 PDB; dict: root, component */}}
{{- define "maas.pdb" -}}
{{- $v := index .root.Values .component -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "maas.componentName" . }}
  labels:
    {{- include "maas.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ $v.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "maas.selectorLabels" . | nindent 6 }}
{{- end }}

{{/* TLS (tls.enabled). Every component mounts its Secret (tls.crt, tls.key, ca.crt) as a
whole volume, never with subPath, so a rotated Secret reaches the running pods, and the
services follow the files. */}}
{{- define "maas.tlsMountPath" -}}/etc/maas/tls{{- end }}

{{/* The Secret holding a component's certificate; dict: root, component */}}
{{- define "maas.tlsSecret" -}}
{{- $t := .root.Values.tls -}}
{{- $name := (index $t .component).secretName -}}
{{- if $name -}}
{{- $name -}}
{{- else if $t.certManager.enabled -}}
{{- include "maas.componentName" (dict "root" .root "component" (printf "%s-tls" .component)) -}}
{{- else -}}
{{- fail (printf "tls.enabled: set tls.%s.secretName or enable tls.certManager" .component) -}}
{{- end -}}
{{- end }}

{{/* The name every internal client checks the server's certificate against: the gateway
reaches inference pods by IP, so one name shared by the internal certificates is
verified instead (tls.internalName, default internal.<fullname>.<namespace>.svc). */}}
{{- define "maas.tlsServerName" -}}
{{- .Values.tls.internalName | default (printf "internal.%s.%s.svc" (include "maas.fullname" .) .Release.Namespace) -}}
{{- end }}

{{/* env: the component's own certificate and, for registry and inference (internal hops),
mutual TLS: a client certificate signed by the secret's ca.crt is required. dict: root, component */}}
{{- define "maas.tlsServerEnv" -}}
{{- if .root.Values.tls.enabled -}}
{{- $p := printf "MAAS_%s_" (upper .component) -}}
{{- $dir := include "maas.tlsMountPath" . -}}
- name: {{ $p }}TLS_CERT
  value: {{ printf "%s/tls.crt" $dir }}
- name: {{ $p }}TLS_KEY
  value: {{ printf "%s/tls.key" $dir }}
{{- if or (ne .component "gateway") .root.Values.tls.gateway.requireClientCert }}
- name: {{ $p }}TLS_CLIENT_CA
  value: {{ printf "%s/ca.crt" $dir }}
{{- end }}
{{- end }}
{{- end }}

{{/* env: client TLS for a component that calls another (gateway, inference): the CA that
signed the servers, its own certificate for mutual TLS, the shared internal name. dict: root, component */}}
{{- define "maas.tlsClientEnv" -}}
{{- if .root.Values.tls.enabled -}}
{{- $p := printf "MAAS_%s_" (upper .component) -}}
{{- $dir := include "maas.tlsMountPath" . -}}
- name: {{ $p }}TLS_CA
  value: {{ printf "%s/ca.crt" $dir }}
- name: {{ $p }}TLS_CLIENT_CERT
  value: {{ printf "%s/tls.crt" $dir }}
- name: {{ $p }}TLS_CLIENT_KEY
  value: {{ printf "%s/tls.key" $dir }}
- name: {{ $p }}TLS_SERVER_NAME
  value: {{ include "maas.tlsServerName" .root | quote }}
{{- end }}
{{- end }}

{{/* volumeMounts / volumes entries for the component's TLS Secret; dict: root, component */}}
{{- define "maas.tlsVolumeMount" -}}
{{- if .root.Values.tls.enabled -}}
- name: tls
  mountPath: {{ include "maas.tlsMountPath" . }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "maas.tlsVolume" -}}
{{- if .root.Values.tls.enabled -}}
- name: tls
  secret:
    secretName: {{ include "maas.tlsSecret" . }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/* Probes while TLS is on: kubelet's gRPC probes cannot speak TLS, so every probe is an
HTTPS GET (kubelet does not verify the certificate) on the metrics port, which needs
no client certificate and names no model: /healthz (up, not draining) for startup and
liveness, /readyz (the API service can serve: for the gateway, the registry loaded
and a backend healthy) for readiness, as the gRPC probes ask without TLS. The
gateway's readiness asks /v2/health/ready on its HTTP listener instead when auth is
off. dict: root, component */}}
{{- define "maas.tlsProbes" -}}
{{- $v := index .root.Values .component -}}
{{- range $kind := list "startup" "readiness" "liveness" }}
{{- $probe := index $v.probes $kind }}
{{ $kind }}Probe:
  httpGet:
    scheme: HTTPS
    {{- if and (eq $kind "readiness") (eq $.component "gateway") (not $.root.Values.gateway.auth.enabled) }}
    path: /v2/health/ready
    port: http
    {{- else }}
    path: {{ eq $kind "readiness" | ternary "/readyz" "/healthz" }}
    port: metrics
    {{- end }}
  {{- range $key := list "initialDelaySeconds" "periodSeconds" "timeoutSeconds" "failureThreshold" }}
  {{- if hasKey $probe $key }}
  {{ $key }}: {{ int (index $probe $key) }}
  {{- end }}
  {{- end }}
{{- end }}
{{- end }}

{{/* A volume source for a CA bundle from a Secret or a ConfigMap, its `key` only;
the caBundle values (secretName, configMapName, key) */}}
{{- define "maas.caBundleVolume" -}}
{{- if .secretName -}}
secret:
  secretName: {{ .secretName }}
  defaultMode: 0444
  items:
    - key: {{ .key }}
      path: {{ .key }}
{{- else -}}
configMap:
  name: {{ .configMapName }}
  defaultMode: 0444
  items:
    - key: {{ .key }}
      path: {{ .key }}
{{- end }}
{{- end }}

{{/* An egress rule to configured peers on one TCP port; dict: to (peers), port */}}
{{- define "maas.egressRule" -}}
- to:
    {{- toYaml .to | nindent 4 }}
  ports:
    - port: {{ int .port }}
      protocol: TCP
{{- end }}

{{/* Egress rules every limited component gets: DNS, then networkPolicy.egress.extra */}}
{{- define "maas.egressDns" -}}
{{- $dns := .Values.networkPolicy.egress.dns -}}
- to:
    {{- toYaml $dns.to | nindent 4 }}
  ports:
    - port: {{ int $dns.port }}
      protocol: UDP
    - port: {{ int $dns.port }}
      protocol: TCP
{{- with .Values.networkPolicy.egress.extra }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* An egress rule to one of the release's own components on its gRPC port; dict: root,
component */}}
{{- define "maas.egressToComponent" -}}
- to:
    - podSelector:
        matchLabels:
          {{- include "maas.selectorLabels" . | nindent 10 }}
  ports:
    - port: {{ int (index .root.Values .component).ports.grpc }}
      protocol: TCP
{{- end }}

{{/* An external service's peers, required once egress is limited; dict: target (egressTarget
values), what (its values path, for the message) */}}
{{- define "maas.egressPeersRequired" -}}
{{- if empty .target.to }}
{{- fail (printf "networkPolicy.egress.enabled: set %s.networkPolicy.to (the peers it may reach)" .what) }}
{{- end }}
{{- end }}
