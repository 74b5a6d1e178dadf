"""Gateway: the REST API for the app, the job queue and its workers, and the orchestrator of the
three gRPC services.

Layers, top to bottom; a module imports only from its own layer and the layers below it
(tests/unit/gateway/test_layers.py checks this):

- the package root's composition root: `__main__` (entrypoint) and `runtime` (builds and wires
  every part); nothing imports them;
- `api/`: HTTP (FastAPI app, routes, schemas, request intake, auth);
- `jobs/`: the persistent job queue and the workers that run its jobs;
- `pipeline/`: one job across face_detect, animator and encoder (orchestrator, stages, clients,
  media, motion-template cache);
- `delivery/`: where results go (storage, signed result links, FCM and webhook notifications);
- `net/`: untrusted input at the byte level (strict parsers, SSRF-safe fetching, IP-pinned
  connections);
- `domain`: the job types every layer speaks;
- the package root's settings and metrics (`config`, `metrics`): read by every layer, they
  import nothing from the gateway.

Below the gateway is `services.common`; the gateway imports no other service.
"""
