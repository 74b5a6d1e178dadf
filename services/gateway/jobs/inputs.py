"""A job's uploaded inputs: kept on the gateway's disk, or in the storage bucket so that any
replica can run the job, and turned into the orchestrator's `JobSpec` at run time.

A stored spec names each input as `{"path": ...}` (local file), `{"url": ...}` (fetched by the
orchestrator) or `{"object": ...}` (a key in the result storage, copied into the work folder).
Its `options` are `AnimationOptions` as JSON, read back through the same model; any other key
(such as a `sequential` flag in a spec queued by an earlier gateway) is not read.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from services.gateway.config import GatewayConfig
from services.gateway.delivery.storage import ResultStorage
from services.gateway.domain import AnimationOptions, Job, JobFailed, JobSpec, MediaInput

logger = logging.getLogger(__name__)

INPUTS = ("source", "driving")


def share_uploads(storage: ResultStorage, job_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Move uploaded files into the bucket (`uploads/<job>/<name><ext>`); returns the new spec.

    Local storage keeps the files where they are: then the data folder is the shared place.
    """
    if storage.local_path_supported:
        return spec
    shared = dict(spec)
    for name in INPUTS:
        path = spec[name].get("path")
        if path:
            key = f"uploads/{job_id}/{name}{Path(path).suffix}"
            storage.put(key, Path(path), content_type="application/octet-stream")
            shared[name] = {"path": None, "url": None, "object": key}
    return shared


def fetch_shared_inputs(
    storage: ResultStorage, spec: Mapping[str, Any], dest: Path
) -> dict[str, Path]:
    """Copy inputs kept in the bucket into `dest`; returns {input name: local path}."""
    local: dict[str, Path] = {}
    for name in INPUTS:
        key = spec[name].get("object")
        if key:
            dest.mkdir(parents=True, exist_ok=True)
            local[name] = dest / Path(key).name
            storage.download(key, local[name])
    return local


def drop_inputs(storage: ResultStorage, spec: Mapping[str, Any], upload_dir: Path) -> bool:
    """Delete a final job's inputs, wherever they were kept; False when one could not be
    deleted (logged; the retention sweeper tries again)."""
    shutil.rmtree(upload_dir, ignore_errors=True)
    complete = not upload_dir.exists()
    for name in INPUTS:
        key = spec.get(name, {}).get("object")
        if key:
            try:
                storage.delete(key)
            except Exception:  # leftovers are logged, not fatal
                logger.warning("could not delete input %s", key, exc_info=True)
                complete = False
    return complete


def drop_job_inputs(storage: ResultStorage, config: GatewayConfig, job: Job) -> bool:
    """Delete the inputs of a job that is final, from its stored spec and its upload folder."""
    return drop_inputs(storage, job.spec, config.upload_dir(job.id))


def stored_options(raw: object) -> AnimationOptions:
    """A stored job's options; ones this version cannot accept fail the job as `bad_option`."""
    try:
        return AnimationOptions.model_validate({} if raw is None else raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part)[:64] for part in first.get("loc", ())) or "options"
        raise JobFailed(
            "bad_option",
            f"the stored option {where} is not usable: {first.get('msg', 'invalid value')}",
        ) from None


def job_spec(job: Job, local: Mapping[str, Path] | None = None) -> JobSpec:
    """The orchestrator's view of a stored job; `local` replaces inputs kept in the bucket."""
    local = local or {}

    def media(name: str) -> MediaInput:
        entry = job.spec[name]
        if name in local:
            return MediaInput(path=local[name])
        path = entry.get("path")
        return MediaInput(path=Path(path) if path else None, url=entry.get("url"))

    return JobSpec(
        job_id=job.id,
        source=media("source"),
        driving=media("driving"),
        seconds=float(job.spec.get("seconds", 10.0)),
        source_max_dim=int(job.spec.get("source_max_dim", 1280)),
        options=stored_options(job.spec.get("options")),
    )
