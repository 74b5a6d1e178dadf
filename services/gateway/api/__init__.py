"""The HTTP layer: the FastAPI app and its routes, request and response schemas, request intake
(JSON and multipart bodies, uploads, media checks), authentication, the per-request state, and
the one API error type. It may import `jobs`, `pipeline`, `delivery`, `net`, `domain`, `config`
and `metrics`; only the composition root (`runtime`) imports it.
"""
