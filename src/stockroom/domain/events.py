"""What a write did, recorded on the unit of work (`uow.record(...)`) and acted on after the
commit by one dispatcher (`domain/effects.py`): the product cache's invalidation, the removal
of files no image uses any more, the live status of jobs, images and imports.

Services never hold a cache, a store or a publisher: a write path that records its events
cannot skip an invalidation. What must not be lost (a job to run, a webhook to deliver) is
not an event: it is an outbox row written in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stockroom.domain.models import ImageJob, JobKind, OwnedImage


@dataclass(frozen=True, slots=True)
class ProductChanged:
    """The product's stored response is stale (cache invalidation)."""

    product_id: int


@dataclass(frozen=True, slots=True)
class TokenRevoked:
    """A token stops working at once, in every process's token cache."""

    token_hash: str


@dataclass(frozen=True, slots=True)
class OutputsReleased:
    """Images no longer point at these files: remove those no other image uses."""

    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class JobChanged:
    """A standalone job's status changed (live status: `event: job`)."""

    job_id: str
    # The job as the write left it, when the write's own statement returned it: the live
    # status then publishes it without a read of its own. Not part of the event's identity.
    seen: ImageJob | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ImageChanged:
    """A product image's status changed (live status: `event: image`)."""

    product_id: int
    image_id: int
    seen: OwnedImage | None = field(default=None, compare=False)  # as JobChanged's


@dataclass(frozen=True, slots=True)
class ImportChanged:
    """An import made progress or finished (live status: `event: import`)."""

    import_id: str


DomainEvent = (
    ProductChanged | TokenRevoked | OutputsReleased | JobChanged | ImageChanged | ImportChanged
)


def job_events(job: ImageJob, product_id: int | None) -> list[DomainEvent]:
    """What a job's transition changed: its product image (and so the product's stored
    response), or the standalone job itself."""
    if job.kind is JobKind.STANDALONE:
        return [JobChanged(job.id)]
    return transition_events(job.id, job.product_image_id, product_id)


def transition_events(
    job_id: str,
    product_image_id: int | None,
    product_id: int | None,
    *,
    job: ImageJob | None = None,
    image: OwnedImage | None = None,
) -> list[DomainEvent]:
    """`job_events` from a transition's ids alone: a job without an image row is
    standalone, or a product image's whose row is gone (the effect reads it and skips it).
    `job` and `image`: the rows as the transition left them, when its statement returned
    them (the events carry them, and the live status reads nothing)."""
    if product_image_id is None:
        return [JobChanged(job_id, job)]
    if product_id is None:
        return []  # the image row is gone: nothing a client can see changed
    return [ProductChanged(product_id), ImageChanged(product_id, product_image_id, image)]
