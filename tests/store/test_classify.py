"""Store errors are classified by their type and error code, the message only when a server sends no code."""

from __future__ import annotations

from pymilvus.exceptions import ConnectError, MilvusException, MilvusUnavailableException
from pymilvus.grpc_gen import common_pb2

from kbrelease.errors import StoreUnreachable
from kbrelease.store.milvus import MilvusStore, classify


def test_by_type_and_code() -> None:
    assert classify(MilvusUnavailableException(message="x")) == "unreachable"
    assert classify(ConnectError(message="x")) == "unreachable"
    assert classify(ConnectionRefusedError("x")) == "unreachable"
    assert classify(MilvusException(message="no", compatible_code=common_pb2.PermissionDenied)) == "auth"
    assert classify(MilvusException(message="collection not found", code=100)) == "other"
    try:
        try:
            raise ConnectionResetError("socket closed")
        except ConnectionResetError as inner:
            raise RuntimeError("while searching") from inner
    except RuntimeError as outer:
        assert classify(outer) == "unreachable"  # what it was raised from counts


def test_a_codeless_message_is_the_last_resort() -> None:
    assert classify(RuntimeError("Fail connecting to server on 127.0.0.1:1")) == "unreachable"
    assert classify(RuntimeError("collection 'c' is in state 'released'")) == "other"


def test_translate_names_the_fix() -> None:
    store = MilvusStore("http://user:pw@127.0.0.1:1", None)
    err = store.translate(MilvusUnavailableException(message="down"), "search", ("kb_v1", "docs"))
    assert isinstance(err, StoreUnreachable) and "check MILVUS_URI" in str(err) and "pw" not in str(err)
