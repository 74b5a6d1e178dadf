"""A small typed Python client for the Dynamics gateway's REST API.

It imports only the standard library and httpx, nothing of the services, so integrators can
copy or import it on its own:

    from services.client import Client, DynamicsError

    with Client("http://127.0.0.1:8080", token=None) as client:
        job = client.submit("photo.png", "hero.mp4", {"driving_multiplier": 1.2}, seconds=5)
        job = client.wait(job.id, on_update=lambda j: print(j.stage, j.progress))
        client.download(job, "result.mp4")

Every refusal is a `DynamicsError` carrying the gateway's stable `code`.
"""

from services.client.client import (
    TERMINAL_STATUSES,
    Client,
    DynamicsError,
    Job,
    JobError,
    ServerSentEvent,
    parse_sse,
)

__all__ = [
    "TERMINAL_STATUSES",
    "Client",
    "DynamicsError",
    "Job",
    "JobError",
    "ServerSentEvent",
    "parse_sse",
]
