{{/*
Combinations values.schema.json cannot express: each stops the render with what is wrong and
what to do. Included (for its side effect only) by configmap.yaml.
*/}}
{{- define "cognition.validate" -}}
{{- $v := .Values -}}
{{- if and (eq $v.persistence.backend "sqlite") (gt (int $v.session.replicas) 1) -}}
{{- fail (printf "persistence.backend=sqlite supports exactly one session replica, but session.replicas=%d: SQLite is one file on one volume. Set session.replicas=1, or persistence.backend=postgres with persistence.postgres.url (or secrets.existingSecret holding `database-url`)." (int $v.session.replicas)) -}}
{{- end -}}
{{- if and (eq $v.persistence.backend "postgres") (not $v.persistence.postgres.url) (not $v.secrets.existingSecret) -}}
{{- fail "persistence.backend=postgres needs a database URL: set persistence.postgres.url (postgres://user:password@host:5432/db) or secrets.existingSecret naming a Secret with the key `database-url`." -}}
{{- end -}}
{{- if and $v.persistence.postgres.url (not (or (hasPrefix "postgres://" $v.persistence.postgres.url) (hasPrefix "postgresql://" $v.persistence.postgres.url))) -}}
{{- fail "persistence.postgres.url must start with postgres:// or postgresql://." -}}
{{- end -}}
{{- if and (eq $v.config.sandbox.backend "local") (or $v.executor.autoscaling.enabled (gt (int $v.executor.replicas) 1)) -}}
{{- fail "config.sandbox.backend=local runs sandboxes inside one executor pod: keep executor.replicas=1 and executor.autoscaling.enabled=false, or use config.sandbox.backend=kubernetes." -}}
{{- end -}}
{{- if and $v.executor.autoscaling.enabled (gt (int $v.executor.autoscaling.minReplicas) (int $v.executor.autoscaling.maxReplicas)) -}}
{{- fail (printf "executor.autoscaling.minReplicas (%d) must not exceed maxReplicas (%d)." (int $v.executor.autoscaling.minReplicas) (int $v.executor.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- if and (eq $v.config.sandbox.backend "kubernetes") (eq $v.config.sandbox.k8s.mode "agent-sandbox") (not $v.config.sandbox.k8s.agentTokenSecret.name) (not $v.config.sandbox.k8s.agentToken) (not $v.secrets.existingSecret) -}}
{{- fail "config.sandbox.k8s.mode=agent-sandbox needs the agent token the SandboxTemplate also uses: set config.sandbox.k8s.agentTokenSecret.name to the Secret the template references (key config.sandbox.k8s.agentTokenSecret.key), or config.sandbox.k8s.agentToken, or secrets.existingSecret with the key `agent-token`." -}}
{{- end -}}
{{- if and (eq $v.llm.provider "openai_compatible") (not $v.llm.baseUrl) -}}
{{- fail "llm.provider=openai_compatible needs llm.baseUrl (e.g. http://ollama:11434/v1) and llm.model." -}}
{{- end -}}
{{- end -}}
