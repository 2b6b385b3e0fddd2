"""The one error tree of Stockroom; `api/errors.py` maps its branches to HTTP once.

StockroomError
├── NotFound            404  ProductNotFound, JobNotFound, UserNotFound, TokenNotFound,
│                            DeadLetterNotFound, ImportNotFound
├── Conflict            409  IdempotencyKeyReused, SkuTaken
├── InvalidInput        422  (carries field errors) UnknownUser
├── Unauthenticated     401  InvalidToken
├── Forbidden           403  NotAllowed
├── RateLimited         429  (carries the limit and the seconds to wait)
├── Unavailable         503  DatabaseUnavailable, CacheUnavailable, StorageUnavailable,
│                            BrokerUnavailable
└── ImageError               why one image could not be processed; each has a stable
                             `code` (the contract's error_code) and says if a retry helps
"""

from __future__ import annotations

from dataclasses import dataclass


class StockroomError(Exception):
    """Base of every error Stockroom raises on purpose."""

    code: str = "error"
    title: str = "Error"

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.title
        super().__init__(self.detail)


# -- 404 ---------------------------------------------------------------------------------
class NotFound(StockroomError):
    code = "not_found"
    title = "Not found"


class ProductNotFound(NotFound):
    code = "product_not_found"
    title = "Product not found"


class JobNotFound(NotFound):
    code = "job_not_found"
    title = "Job not found"


class UserNotFound(NotFound):
    code = "user_not_found"
    title = "User not found"


class TokenNotFound(NotFound):
    code = "token_not_found"
    title = "Token not found"


class DeadLetterNotFound(NotFound):
    code = "dead_letter_not_found"
    title = "Dead letter not found"


class ImportNotFound(NotFound):
    code = "import_not_found"
    title = "Import not found"


# -- 409 ---------------------------------------------------------------------------------
class Conflict(StockroomError):
    code = "conflict"
    title = "Conflict"


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"
    title = "Idempotency-Key was already used with a different request"


class IdempotentRequestInFlight(Conflict):
    code = "idempotent_request_in_flight"
    title = "A request with this Idempotency-Key is being processed"


class UploadNotReady(Conflict):
    """`POST /jobs/{id}/start` before the file was PUT to its upload URL."""

    code = "upload_missing"
    title = "Nothing was uploaded for this job yet"


class UploadExpired(Conflict):
    """`POST /jobs/{id}/start` on a job whose upload URL expired (or that already failed)."""

    code = "upload_expired"
    title = "The upload URL of this job has expired"


class SkuTaken(Conflict):
    code = "sku_taken"
    title = "A product with this sku already exists"


class EmailTaken(Conflict):
    code = "email_taken"
    title = "A user with this email already exists"


# -- 422 ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one input field (`product_images[2]`), as the contract lists them."""

    field: str
    message: str


class InvalidInput(StockroomError):
    code = "invalid_input"
    title = "Invalid input"

    def __init__(self, detail: str | None = None, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.errors = errors or []


class UnknownUser(InvalidInput):
    code = "unknown_user"
    title = "No such user"


# -- 401 / 403 ---------------------------------------------------------------------------
class Unauthenticated(StockroomError):
    code = "unauthenticated"
    title = "Authentication required"


class InvalidToken(Unauthenticated):
    code = "invalid_token"
    title = "Invalid or revoked token"


class Forbidden(StockroomError):
    code = "forbidden"
    title = "Not allowed"


class NotAllowed(Forbidden):
    code = "not_allowed"
    title = "Not allowed"


# -- 429 ---------------------------------------------------------------------------------
class RateLimited(StockroomError):
    """A budget of `limit` requests is spent; the next one is accepted in `retry_after` s."""

    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, detail: str | None = None, *, limit: int, retry_after: int) -> None:
        super().__init__(detail)
        self.limit = limit
        self.retry_after = retry_after


# -- 503 ---------------------------------------------------------------------------------
class Unavailable(StockroomError):
    code = "unavailable"
    title = "A dependency is unavailable"


class DatabaseUnavailable(Unavailable):
    code = "database_unavailable"
    title = "The database is unavailable"


class CacheUnavailable(Unavailable):
    code = "cache_unavailable"
    title = "The cache is unavailable"


class StorageUnavailable(Unavailable):
    code = "storage_error"
    title = "The object storage is unavailable"


class BrokerUnavailable(Unavailable):
    code = "broker_unavailable"
    title = "The message broker is unavailable"


class TooLarge(StockroomError):
    """A body or file over its size limit (413)."""

    code = "too_large"
    title = "Content Too Large"


class UnsupportedMediaType(StockroomError):
    """A file that is not an image the pipeline reads, told from its bytes (415)."""

    code = "unsupported_media_type"
    title = "Unsupported Media Type"


# -- image processing --------------------------------------------------------------------
class ImageError(StockroomError):
    """Why an image could not be processed; `code` is the contract's `error_code`.

    `permanent` errors fail the job at once; the others are retried with backoff.
    """

    code = "decode_error"
    title = "Image could not be processed"
    permanent = True


class BlockedAddress(ImageError):
    code = "blocked_address"
    title = "The URL points to an address that is not allowed"


class FetchTimeout(ImageError):
    code = "timeout"
    title = "The download timed out"
    permanent = False


class SourceUnreachable(ImageError):
    """Connection refused or reset: worth another try, reported as a timeout class."""

    code = "timeout"
    title = "The source could not be reached"
    permanent = False


class SourceClientError(ImageError):
    code = "http_4xx"
    title = "The source answered with a client error"


class SourceServerError(ImageError):
    code = "http_5xx"
    title = "The source answered with a server error"
    permanent = False


class ImageTooLarge(ImageError):
    code = "too_large"
    title = "The image is larger than the size limit"


class TooManyPixels(ImageError):
    code = "too_many_pixels"
    title = "The image has more pixels than the limit"


class NotAnImage(ImageError):
    code = "not_an_image"
    title = "The file is not a supported image"


class ImageDecodeError(ImageError):
    code = "decode_error"
    title = "The image data is corrupt"


class ImageStorageError(ImageError):
    code = "storage_error"
    title = "The processed image could not be stored"
    permanent = False


class RetriesExhausted(ImageError):
    code = "retries_exhausted"
    title = "The job failed after all its retries"
