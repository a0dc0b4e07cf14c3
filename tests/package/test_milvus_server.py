"""A package exported from the embedded default (Milvus Lite) imports into a real Milvus server (2.3.5)
and every search returns the same results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .support import MakeTarget

pytestmark = [pytest.mark.milvus_server, pytest.mark.slow]

QUERIES = ["how do I connect to the VPN from home", "what happens during the fire drill", "gym membership discount", "rotate my password"]


def _hits(hits: list[Any]) -> list[tuple[str, int, str]]:
    return [(h.file, h.chunk_index, h.source) for h in hits]


def test_lite_to_server_by_package_and_by_promote_gives_the_same_search_results(
    project: Any, make_target: MakeTarget, milvus_server: str, tmp_path: Path, corpus: Path
) -> None:
    project.publish()
    package = tmp_path / "v1.tar.zst"
    project.package_export("v1", package, compress=True)
    server = make_target("prod", uri=milvus_server, environ={"MILVUS_TOKEN": "root:Milvus"})

    imported = server.package_import(package, switch=True)
    promoted = project.promote("v1", server, name="v1_promoted")

    assert (imported.state, imported.live, promoted.state) == ("verified", "v1", "verified")
    assert server.store.uri == milvus_server and "root:Milvus" not in str(server.cfg.redacted())
    assert {f"{server.cfg.milvus.db_prefix}prod_v1", f"{server.cfg.milvus.db_prefix}prod_v1_promoted"} <= set(server.store.databases())
    for query in QUERIES:
        lite = project.search(query, k=5)
        for release in ("v1", "v1_promoted"):
            remote = server.search(query, k=5, release=release)
            assert _hits(remote) == _hits(lite), query
            assert [h.score for h in remote] == pytest.approx([h.score for h in lite], abs=1e-4)
    picture = sorted((corpus / "images" / "stripes").iterdir())[1]
    assert _hits(server.search_image(picture, k=3)) == _hits(project.search_image(picture, k=3))
