"""CSV bulk imports (POST /imports): a file checked whole, then its rows written as the
owner's products in batches, and their images processed on the imports' own queue.

Crash safety: accepting an import writes the import, every parsed row and one outbox message
per batch in one transaction, so from the 202 on the database holds all an import needs and
whichever worker receives a batch applies it. A batch is applied once: its `import_batches`
row is claimed in the transaction that writes its products, so a redelivered message finds it
claimed and does nothing, and a batch that failed half-way left nothing behind.

Rows become products by sku (the Serial Number): new ones are created, existing ones updated
by the PATCH rule (`products._replace_images`: an image whose URL stays keeps its result). An
import is finished once every batch is applied and every image its rows point at is ready or
failed: looked at after the last batch, then by every API process's sweep
(`finish_settled`). `after_import_finished` runs in the transaction that sets the final
status, once per import.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal

import structlog

from stockroom.domain.csv_import import DESCRIPTION, ImportRow, ParsedImport
from stockroom.domain.errors import ImportNotFound
from stockroom.domain.events import ImportChanged, ProductChanged
from stockroom.domain.idempotency import FirstResponse, IdempotencyKey, Outcome, create_once
from stockroom.domain.image_jobs import IMPORTS_QUEUE, queue_product_images
from stockroom.domain.models import Import, ImportStatus, Product, ProductImage, User
from stockroom.domain.ports import (
    Lookups,
    OutputRow,
    ProductFields,
    UnitOfWork,
    UnitOfWorkFactory,
)
from stockroom.domain.products import _replace_images, may_see, release_outputs
from stockroom.domain.queries import NewProduct
from stockroom.domain.views import import_view
from stockroom.domain.webhook_delivery import new_webhook, queue_webhook

log = structlog.get_logger("stockroom.imports")
APPLY_BATCH = "apply_import_batch"  # the actor, on IMPORTS_QUEUE
CREATE_SCOPE = "imports.create"
DEFAULT_PRICE = Decimal("0.00")  # a new product whose row gives no price
OUTPUT_PAGE = 1000


@dataclass(frozen=True, slots=True)
class ImportPage:
    items: list[Import]
    next_cursor: str | None  # the id of the page's last import


def new_import_id() -> str:
    return uuid.uuid4().hex


# -- hooks: where webhooks and live status connect --------------------------------------------


async def after_import_batch(uow: UnitOfWork, progressed: Import) -> None:
    """A batch of the import's rows was written; runs inside that batch's transaction."""
    uow.record(ImportChanged(progressed.id))


async def after_import_finished(uow: UnitOfWork, finished: Import) -> None:
    """The import reached its final status (completed, completed_with_errors or failed), with
    its final counts; runs inside the transaction that set it, once per import: its live
    event, and its `import.completed` webhook written with it (never lost)."""
    uow.record(ImportChanged(finished.id))
    if finished.callback_url is not None:
        message = new_webhook(
            finished.user_id,
            "import.completed",
            finished.callback_url,
            import_view(finished),
            import_id=finished.id,
        )
        await queue_webhook(uow, message)


# -- accepting and reading ---------------------------------------------------------------------


async def accept_import(
    uow: UnitOfWork,
    actor: User,
    parsed: ParsedImport,
    *,
    per_batch: int,
    render: Callable[[Import], bytes],
    callback_url: str | None = None,
    idempotency: IdempotencyKey | None = None,
    request_id: str | None = None,
) -> Outcome:
    """Store a checked file's rows and queue its batches, all in one transaction (202)."""

    async def create(uow: UnitOfWork) -> FirstResponse:
        batches = [uuid.uuid4().hex for _ in range(0, len(parsed.rows), per_batch)]
        accepted = Import(
            id=new_import_id(),
            user_id=actor.id,
            status=ImportStatus.PENDING,
            columns=parsed.columns,
            rows=len(parsed.rows),
            images_total=sum(len(row.image_urls) for row in parsed.rows),
            batches=len(batches),
            created_at=datetime.now(UTC),
            callback_url=callback_url,
            request_id=request_id,
        )
        await uow.imports.add(accepted)
        await uow.imports.add_rows(accepted.id, parsed.rows, per_batch)
        await uow.imports.add_batches(accepted.id, batches)
        await uow.outbox.add_many(batches, APPLY_BATCH, IMPORTS_QUEUE, request_id)
        return FirstResponse(202, render(accepted), f"/imports/{accepted.id}")

    return await create_once(uow, actor.id, CREATE_SCOPE, idempotency, create)


async def get_import(uow: UnitOfWork, actor: User, import_id: str) -> Import:
    """The caller's import (an admin's: anyone's), its image counts live until it finishes."""
    async with uow:
        found = await uow.imports.get(import_id)
        if found is None or not may_see(actor, found.user_id):
            raise ImportNotFound()
        if found.status.finished:
            return found
        tally = await uow.imports.tally(import_id)
    return replace(found, images_done=tally.done, images_failed=tally.failed)


async def list_imports(
    uow: UnitOfWork, actor: User, *, limit: int = 20, after: str | None = None
) -> ImportPage:
    """The caller's imports, newest first (an admin's list holds everyone's), as stored:
    the image counts of one still running are in `get_import`."""
    async with uow:
        found = await uow.imports.search(
            user_id=None if actor.is_admin else actor.id, limit=limit + 1, after=after
        )
    items = found[:limit]
    return ImportPage(items, items[-1].id if len(found) > limit else None)


async def output_rows(
    uow_factory: UnitOfWorkFactory, import_id: str, page: int = OUTPUT_PAGE
) -> AsyncIterator[list[OutputRow]]:
    """The rows of output.csv in pages, each read in a transaction of its own (a slow client
    holds no connection); call `get_import` first, for the 404."""
    after = 0
    while True:
        async with uow_factory() as uow:
            rows = await uow.imports.output_rows(import_id, after, page)
        if rows:
            yield rows
        if len(rows) < page:
            return
        after = rows[-1].row


# -- applying a batch (the imports queue's actor) ----------------------------------------------


async def run_batch(
    uow_factory: UnitOfWorkFactory,
    batch_id: str,
    *,
    last_attempt: bool,
) -> None:
    """One delivery of a batch message. Raises on failure so the broker retries it; when
    the last attempt fails, the import fails (its batches left are then skipped)."""
    try:
        await apply_batch(uow_factory(), batch_id)
    except Exception as exc:
        if last_attempt:
            log.error("import.batch_failed", batch_id=batch_id, error=type(exc).__name__)
            await fail_import(uow_factory(), batch_id, "rows could not be written")
        raise


async def apply_batch(uow: UnitOfWork, batch_id: str) -> None:
    """Write a batch's rows as products, once. The products it changed and the files its
    updates let go are recorded for after the commit (domain/effects.py)."""
    async with uow:
        now = datetime.now(UTC)
        claimed = await uow.imports.claim_batch(batch_id, now)
        if claimed is None:
            return  # applied already: a redelivered message
        import_id, number = claimed
        current = await uow.imports.get(import_id)
        if current is None or current.status.finished:
            await uow.commit()  # the import failed meanwhile: its batches left are skipped
            return
        rows = await uow.imports.batch_rows(import_id, number)
        written = await _write_rows(uow, current, rows, now)
        progressed = await uow.imports.batch_applied(import_id, len(rows), now)
        await after_import_batch(uow, progressed)
        if progressed.batches_done >= progressed.batches:
            await _finish_if_settled(uow, progressed)
        for product_id in written.changed:
            uow.record(ProductChanged(product_id))
        release_outputs(uow, written.dropped)
        await uow.commit()
    log.info("import.batch_applied", import_id=import_id, batch=number, rows=len(rows))


@dataclass(slots=True)
class _Written:
    changed: list[int]  # existing products that changed (cached copies to retire)
    dropped: list[ProductImage]  # the images dropped (their files may be unused now)


async def _write_rows(
    uow: UnitOfWork, owner: Import, rows: Sequence[ImportRow], now: datetime
) -> _Written:
    user_id = owner.user_id
    found = await uow.imports.products_by_sku(user_id, [row.sku for row in rows])
    current: dict[int, Product] = {}
    if found:
        await uow.imports.lock_products(sorted(found.values()))
        # Again, now that they are held: a sku may have moved, or its product gone, meanwhile.
        found = await uow.imports.products_by_sku(user_id, [row.sku for row in rows])
        current = {
            product.id: product for product in await uow.imports.products(list(found.values()))
        }
    # In sku order: two batches inserting the same new skus wait on each other, never deadlock.
    fresh = sorted((row for row in rows if row.sku not in found), key=lambda row: row.sku)
    drafts = [
        NewProduct(
            product_name=row.name,
            product_price=DEFAULT_PRICE if row.price is None else row.price,
            product_description=row.description,
            sku=row.sku,
        )
        for row in fresh
    ]
    new_ids = await uow.imports.add_products(user_id, drafts, now)
    links: list[tuple[int, int, int]] = []  # (row, position, product image id)
    queue: list[tuple[int, list[tuple[int, str]]]] = []  # (product id, new (image id, url))
    for row, product_id in zip(fresh, new_ids, strict=True):
        image_ids = await uow.products.add_images(product_id, list(enumerate(row.image_urls)))
        links += [(row.row, position, image_id) for position, image_id in enumerate(image_ids)]
        queue.append((product_id, list(zip(image_ids, row.image_urls, strict=True))))
    written = _Written([], [])
    changes: list[ProductFields] = []
    sets_description = DESCRIPTION.casefold() in {c.strip().casefold() for c in owner.columns}
    for row in rows:
        if row.sku not in found:
            continue
        product = current[found[row.sku]]
        fields = ProductFields(
            product.id,
            row.name,
            product.product_price if row.price is None else row.price,
            row.description if sets_description else product.product_description,
        )
        images = product.images
        if list(row.image_urls) != product.product_images:  # the PATCH rule, as PATCH does it
            new, dropped = await _replace_images(
                uow, product.id, product.images, list(row.image_urls)
            )
            queue.append((product.id, new))
            written.dropped += dropped
            reread = await uow.products.get(product.id)
            images = reread.images if reread is not None else ()
        if images != product.images or fields != _fields_of(product):
            changes.append(fields)
            written.changed.append(product.id)
        links += [(row.row, position, image.id) for position, image in enumerate(images)]
    await uow.imports.update_products(changes, now)
    job_ids: list[str] = []
    for product_id, pending in queue:
        if pending:
            job_ids += await queue_product_images(
                uow,
                user_id=user_id,
                product_id=product_id,
                images=pending,
                request_id=owner.request_id,
                queue=IMPORTS_QUEUE,
            )
    await uow.imports.tag_jobs(owner.id, job_ids)
    await uow.imports.link_images(owner.id, links)
    return written


def _fields_of(product: Product) -> ProductFields:
    return ProductFields(
        product.id, product.product_name, product.product_price, product.product_description
    )


# -- finishing ---------------------------------------------------------------------------------


async def _finish_if_settled(uow: UnitOfWork, processing: Import) -> Import | None:
    """Finish the import if none of its images waits any more (inside the caller's
    transaction); the cheap check first: an unfinished job of its own is one index probe."""
    if await uow.imports.has_unfinished_jobs(processing.id):
        return None
    tally = await uow.imports.tally(processing.id)
    if tally.waiting:
        return None  # a kept image still processing for an earlier change
    status = ImportStatus.COMPLETED_WITH_ERRORS if tally.failed else ImportStatus.COMPLETED
    finished = await uow.imports.finish(processing.id, status, tally, datetime.now(UTC))
    if finished is not None:
        await after_import_finished(uow, finished)
        log.info(
            "import.finished",
            import_id=finished.id,
            status=finished.status.value,
            images_done=finished.images_done,
            images_failed=finished.images_failed,
        )
    return finished


async def finish_settled(uow_factory: UnitOfWorkFactory, lookups: Lookups) -> int:
    """The sweep every API process runs: finish the imports whose rows are all written and
    whose images are all done; returns how many. Harmless to run anywhere at once. Asking
    which imports to look at is one read on the hot path's pool (`Lookups`): the sweep runs
    several times a second, and almost always finds none."""
    candidates = await lookups.settling_imports()
    finished = 0
    for import_id in candidates:
        async with uow_factory() as uow:
            processing = await uow.imports.get(import_id)
            if processing is not None and await _finish_if_settled(uow, processing):
                finished += 1
            await uow.commit()
    return finished


async def fail_import(uow: UnitOfWork, batch_id: str, error: str) -> Import | None:
    """A batch could not be written after every retry: the import fails, for good."""
    async with uow:
        claimed = await uow.imports.claim_batch(batch_id, datetime.now(UTC))
        if claimed is None:
            return None
        import_id, number = claimed
        tally = await uow.imports.tally(import_id)
        detail = f"{error} (batch {number + 1})"
        failed = await uow.imports.finish(
            import_id, ImportStatus.FAILED, tally, datetime.now(UTC), error=detail
        )
        if failed is not None:
            await after_import_finished(uow, failed)
        await uow.commit()
    return failed


async def requeue_batches(uow: UnitOfWork, created_before: datetime | None = None) -> int:
    """Queue again, through the outbox, the batches not applied of unfinished imports (the
    embedded worker's queue was in memory; RabbitMQ may have lost them). A batch applied
    meanwhile does nothing twice."""
    async with uow:
        waiting = await uow.imports.unapplied_batches(created_before)
        for batch_id, request_id in waiting:
            await uow.outbox.add(batch_id, APPLY_BATCH, IMPORTS_QUEUE, request_id)
        await uow.commit()
    return len(waiting)
