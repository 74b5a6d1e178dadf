# Thin wrappers over the project's own scripts; each target runs one command.
PY ?= .venv/bin/python

.PHONY: render-k8s check-k8s helm-lint lock lock-cuda test-deploy

# Re-render k8s/dynamics.yaml and deploy/prometheus/rules.yml from helm/dynamics.
render-k8s:
	$(PY) helm/render.py

# Fail if the committed renders differ from the chart.
check-k8s:
	$(PY) helm/render.py --check

# helm lint --strict with every helm/dynamics/ci/*-values.yaml.
helm-lint:
	$(PY) helm/render.py --lint

# Rewrite requirements/*.txt from pyproject.toml and the installed virtualenv.
lock:
	$(PY) docker/lock_requirements.py

# Rewrite the CUDA image's hash-locked requirements/animator-gpu*.txt from the package index
# (run after `make lock`: it keeps animator.txt's versions).
lock-cuda:
	$(PY) docker/lock_cuda.py

# Chart, images and alert rules (promtool) checks.
test-deploy:
	$(PY) -m pytest -q tests/helm tests/docker tests/observability/test_rules.py
