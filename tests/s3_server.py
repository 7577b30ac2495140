"""The S3 server and proxy under their first module name: they now live in ``tests/_object_store.py``
(shared by the S3, GCS and Azure tests). Kept so test files written against this name still import."""

from tests._object_store import CountingProxy, MotoS3, Request, s3_operation, summarize

__all__ = ["CountingProxy", "MotoS3", "Request", "s3_operation", "summarize"]
