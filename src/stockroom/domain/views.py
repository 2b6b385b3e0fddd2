"""Resources as clients see them, shared by the API's answers, the live events and the
webhooks: a standalone job (`GET /jobs/{id}`), a product image (`images[i]`) and an import
(`GET /imports/{id}`)."""

from __future__ import annotations

from stockroom.domain.models import ImageJob, Import, ProductImage


def job_view(job: ImageJob) -> dict[str, object]:
    return {
        "id": job.id,
        "status": job.status.value,
        "operations": job.operations,
        "source_url": job.source_url,
        "output_url": job.output_url,
        "attempts": job.attempts,
        "error": job.error,
        "error_code": job.error_code,
        "width": job.width,
        "height": job.height,
        "bytes_in": job.bytes_in,
        "bytes_out": job.bytes_out,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def image_view(image: ProductImage) -> dict[str, object]:
    return {
        "source_url": image.source_url,
        "status": image.status.value,
        "compressed_url": image.compressed_url,
        "width": image.width,
        "height": image.height,
        "bytes_in": image.bytes_in,
        "bytes_out": image.bytes_out,
        "error": image.error,
        "error_code": image.error_code,
    }


def import_view(found: Import) -> dict[str, object]:
    return {
        "request_id": found.id,
        "status": found.status.value,
        "rows": found.rows,
        "rows_done": found.rows_done,
        "images_total": found.images_total,
        "images_done": found.images_done,
        "images_failed": found.images_failed,
        "error": found.error,
        "created_at": found.created_at,
        "started_at": found.started_at,
        "finished_at": found.finished_at,
        "output_url": f"/imports/{found.id}/output.csv" if found.status.finished else None,
    }
