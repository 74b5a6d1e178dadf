{{/*
Resource bodies shared by the components (HPA on CPU, PDB, ServiceMonitor). Each
templates/<component>/{hpa,pdb,servicemonitor}.yaml includes one of these, so every
component renders the same shape. Call with
(dict "root" $ "component" "encoder" "values" .Values.encoder "port" "metrics").
*/}}

{{- define "dynamics.cpuHpa" -}}
{{- $v := .values -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "dynamics.componentName" . }}
  labels:
    {{- include "dynamics.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "dynamics.componentName" . }}
  minReplicas: {{ $v.autoscaling.minReplicas }}
  maxReplicas: {{ $v.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $v.autoscaling.targetCPUUtilizationPercentage }}
{{- end -}}

{{- define "dynamics.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "dynamics.componentName" . }}
  labels:
    {{- include "dynamics.componentLabels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "dynamics.componentSelectorLabels" . | nindent 6 }}
{{- end -}}

{{- define "dynamics.serviceMonitor" -}}
{{- $sm := .root.Values.metrics.serviceMonitor -}}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "dynamics.componentName" . }}
  labels:
    {{- include "dynamics.componentLabels" . | nindent 4 }}
    {{- with $sm.additionalLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "dynamics.componentSelectorLabels" . | nindent 6 }}
  namespaceSelector:
    matchNames: [{{ .root.Release.Namespace | quote }}]
  endpoints:
    - port: {{ .port }}
      path: /metrics
      interval: {{ $sm.interval }}
      scrapeTimeout: {{ $sm.scrapeTimeout }}
{{- end -}}
