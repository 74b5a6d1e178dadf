"""The job queue: the persistent store (SQLite or PostgreSQL, leased claims, quotas, page
cursors), the worker pool that claims jobs and runs them through the orchestrator, a job's
inputs, and the retry policy. It may import `pipeline`, `delivery`, `net`, `domain`, `config`
and `metrics`, never `api`; the orchestrator reaches a worker as an injected object.
"""
