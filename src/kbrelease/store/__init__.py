"""The vector store boundary: :class:`~kbrelease.store.milvus.MilvusStore` (Milvus Lite or a server) and the embedded Lite server's lifecycle."""
