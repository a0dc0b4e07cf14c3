"""``promote``: export from one environment and import into another through a pipe.

Nothing touches a disk: the exporter writes the package into an OS pipe on a
thread, the importer reads it in one pass (checks before the first write,
digests compared before the release is built). Memory is bounded by one row
part on each side.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from kbrelease.errors import PackageError
from kbrelease.package.export import DEFAULT_PART_BYTES, write_package
from kbrelease.package.importer import ImportInfo, ImportTarget, import_stream
from kbrelease.release.registry import ReleaseRecord
from kbrelease.store.milvus import MilvusStore


def promote(
    store: MilvusStore,
    record: ReleaseRecord,
    release_dir: Path,
    target: ImportTarget,
    name: str | None = None,
    switch: bool = False,
    part_bytes: int = DEFAULT_PART_BYTES,
) -> ImportInfo:
    """Copy release ``record`` (with its rows and data index) into ``target``; never re-embeds."""
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "rb")
    writer = os.fdopen(write_fd, "wb")
    failures: list[BaseException] = []

    def produce() -> None:
        try:
            write_package(store, record, release_dir, writer, part_bytes=part_bytes)
        except BrokenPipeError:
            pass  # the importer stopped reading (refused, or already imported); it reports why
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            failures.append(exc)
        finally:
            with contextlib.suppress(OSError):
                writer.close()

    thread = threading.Thread(target=produce, name=f"export-{record.name}", daemon=True)
    thread.start()
    try:
        # No signature check: the stream is this process's own export of an environment of the same configuration.
        info = import_stream(reader, f"release {record.name} of environment {record.environment!r}", target, name, switch, signatures=False)
    except PackageError as exc:
        reader.close()
        thread.join()
        if failures:  # the export failed and cut the stream short: its error says why
            raise failures[0] from exc
        raise
    finally:
        reader.close()
        thread.join()
    if failures:
        raise failures[0]
    return info
