{{/*
Names, labels and shared pod pieces for every Dynamics component.
Selectors use name + instance + component only, never the version, so upgrades keep them.
*/}}

{{- define "dynamics.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dynamics.fullname" -}}
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

{{- define "dynamics.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dynamics.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dynamics.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dynamics.labels" -}}
helm.sh/chart: {{ include "dynamics.chart" . }}
{{ include "dynamics.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dynamics
{{- end -}}

{{/* "<fullname>-<component>"; call with (dict "root" $ "component" "animator"). */}}
{{- define "dynamics.componentName" -}}
{{- printf "%s-%s" (include "dynamics.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dynamics.componentSelectorLabels" -}}
{{ include "dynamics.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "dynamics.componentLabels" -}}
{{ include "dynamics.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "dynamics.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dynamics.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Image reference; call with (dict "root" $ "base" .Values.images.cpu "override" .Values.encoder.image).
A digest pins the base image and wins over any tag.
*/}}
{{- define "dynamics.image" -}}
{{- $repo := default .base.repository .override.repository -}}
{{- if and .base.digest (not .override.repository) -}}
{{- printf "%s@%s" $repo .base.digest -}}
{{- else -}}
{{- $tag := default (default .root.Chart.AppVersion .base.tag) .override.tag -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{/*
gRPC target of a component: its headless Service's name through gRPC's DNS resolver, so the
gateway's channel sees every Ready pod and balances calls over them (round_robin);
(dict "root" $ "component" "encoder" "port" 50053).
*/}}
{{- define "dynamics.grpcAddress" -}}
{{- printf "dns:///%s.%s.svc.%s:%v" (include "dynamics.componentName" .) .root.Release.Namespace .root.Values.clusterDomain .port -}}
{{- end -}}

{{/* Pod template metadata: extra labels under the selector labels (which win), annotations. */}}
{{- define "dynamics.podMetadata" -}}
{{- $selector := include "dynamics.componentSelectorLabels" . | fromYaml -}}
labels:
  {{- toYaml (merge $selector (deepCopy (default dict .values.podLabels))) | nindent 2 }}
{{- with .values.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Pod spec extension points: priority class and topology spread (a constraint without a
labelSelector gets the component's selector labels). */}}
{{- define "dynamics.podExtras" -}}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- if .values.topologySpreadConstraints }}
{{- $selector := include "dynamics.componentSelectorLabels" . | fromYaml }}
{{- $constraints := list }}
{{- range .values.topologySpreadConstraints }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $selector) }}
{{- end }}
{{- $constraints = append $constraints $c }}
{{- end }}
topologySpreadConstraints:
  {{- toYaml $constraints | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Replicas a component keeps at least: autoscaling's minimum, else replicaCount. */}}
{{- define "dynamics.minReplicas" -}}
{{- if .autoscaling.enabled -}}{{ int .autoscaling.minReplicas }}{{- else -}}{{ int .replicaCount }}{{- end -}}
{{- end -}}

{{/* Replicas a component may reach: autoscaling's maximum, else replicaCount. */}}
{{- define "dynamics.maxReplicas" -}}
{{- if .autoscaling.enabled -}}{{ int .autoscaling.maxReplicas }}{{- else -}}{{ int .replicaCount }}{{- end -}}
{{- end -}}

{{/* Server connection age of the gRPC services (clients re-resolve on the GOAWAY). */}}
{{- define "dynamics.grpcServerEnv" -}}
- {name: GRPC_MAX_CONNECTION_AGE_S, value: {{ .Values.grpc.maxConnectionAgeSeconds | toString | quote }}}
- {name: GRPC_MAX_CONNECTION_AGE_GRACE_S, value: {{ .Values.grpc.maxConnectionAgeGraceSeconds | toString | quote }}}
- {name: GRPC_DRAIN_DELAY_S, value: {{ .Values.grpc.drainDelaySeconds | toString | quote }}}
{{- end -}}

{{/* Pod-wide pieces: service account, pull secrets, security context. */}}
{{- define "dynamics.podCommon" -}}
serviceAccountName: {{ include "dynamics.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{/* Scheduling fields of a component; call with the component's values. */}}
{{- define "dynamics.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The /tmp scratch volume every pod mounts (the root filesystem is read-only). */}}
{{- define "dynamics.scratchVolume" -}}
- name: scratch
  emptyDir:
    sizeLimit: {{ .Values.scratch.sizeLimit }}
{{- end -}}

{{- define "dynamics.scratchMount" -}}
- name: scratch
  mountPath: /tmp
{{- end -}}

{{/* The extra env entries, envFrom, volumes and mounts of a component; call with its values. */}}
{{- define "dynamics.extraEnvEntries" -}}
{{- with .extraEnv }}
{{- toYaml . }}
{{- end }}
{{- end -}}

{{- define "dynamics.envFrom" -}}
{{- with .extraEnvFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Extra env from a name -> value map, sorted for stable output. */}}
{{- define "dynamics.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/*
Probes for a gRPC service: startup and readiness on the gRPC health service, liveness on TCP
so a pod that is draining (health NOT_SERVING) is not restarted mid-job.
Call with (dict "values" .Values.encoder "service" "dynamics.v1.EncoderService").
*/}}
{{- define "dynamics.grpcProbes" -}}
startupProbe:
  grpc:
    port: {{ .values.ports.grpc }}
    service: {{ .service }}
  {{- toYaml .values.startupProbe | nindent 2 }}
readinessProbe:
  grpc:
    port: {{ .values.ports.grpc }}
    service: {{ .service }}
  {{- toYaml .values.readinessProbe | nindent 2 }}
livenessProbe:
  tcpSocket:
    port: grpc
  {{- toYaml .values.livenessProbe | nindent 2 }}
{{- end -}}

{{/* Public base URL of the gateway, checked: required and https outside local installs. */}}
{{- define "dynamics.checkedPublicUrl" -}}
{{- $url := include "dynamics.gatewayPublicUrl" . -}}
{{- if not .Values.global.local -}}
{{- if not $url -}}
{{- fail "gateway.publicUrl is required (the https:// URL the app reaches the gateway at, used in result links), or an Ingress host with TLS; set global.local=true for a local install" -}}
{{- end -}}
{{- if not (hasPrefix "https://" $url) -}}
{{- fail (printf "gateway public URL %q must be https:// outside local installs (result links carry signed tokens); set gateway.publicUrl, give the Ingress host TLS, or set global.local=true for a local install" $url) -}}
{{- end -}}
{{- end -}}
{{- $url -}}
{{- end -}}

{{/* Service drain time: the pod's grace period less the drain delay (calls still accepted while
clients re-resolve) and 10 s of margin. Called with (dict "v" <component values> "root" $). */}}
{{- define "dynamics.drainSeconds" -}}
{{- max 1 (sub (sub (int .v.terminationGracePeriodSeconds) 10) (int .root.Values.grpc.drainDelaySeconds)) -}}
{{- end -}}

{{- define "dynamics.databaseSecretName" -}}
{{- default (printf "%s-database" (include "dynamics.fullname" .)) .Values.database.postgresql.existingSecret -}}
{{- end -}}

{{/* Public base URL of the gateway (result links): the first Ingress host, if any. */}}
{{- define "dynamics.gatewayPublicUrl" -}}
{{- $g := .Values.gateway -}}
{{- if $g.publicUrl -}}
{{- $g.publicUrl -}}
{{- else if and $g.ingress.enabled $g.ingress.hosts -}}
{{- printf "%s://%s" (ternary "https" "http" (gt (len $g.ingress.tls) 0)) (index $g.ingress.hosts 0).host -}}
{{- end -}}
{{- end -}}

{{/*
Node selector of the animator: `animator.gpuPool.nodeSelector` when set (it replaces, never merges),
else the preset's label with the GPU pool's value; none for a CPU animator or preset `none`.
*/}}
{{- define "dynamics.gpuNodeSelector" -}}
{{- $v := .Values.animator -}}
{{- $presetKeys := dict "gfd" "nvidia.com/gpu.product" "gke" "cloud.google.com/gke-accelerator" "eks" "karpenter.k8s.aws/instance-gpu-name" -}}
{{- if $v.gpuPool.nodeSelector -}}
{{- toYaml $v.gpuPool.nodeSelector -}}
{{- else if and $v.gpu.enabled (ne $v.gpuPool.preset "none") -}}
{{- $pool := get $v.gpu.pools $v.gpu.pool -}}
{{- $value := get (default dict $pool.labels) $v.gpuPool.preset -}}
{{- if not $value -}}
{{- fail (printf "animator.gpu.pools.%s.labels has no %q label: add it, or set animator.gpuPool.nodeSelector" $v.gpu.pool $v.gpuPool.preset) -}}
{{- end -}}
{{- toYaml (dict (get $presetKeys $v.gpuPool.preset) $value) -}}
{{- end -}}
{{- end -}}
