"""Integrations: LangChain and LlamaIndex retrievers over the live (or a pinned) release.

:mod:`kbrelease.integrations.reader` is the part they share and needs no
third-party package: a :class:`~kbrelease.integrations.reader.ReleaseReader`
resolves the release per query (through the live pointer, cached for a few
seconds) and searches it with the facade, so a switch reaches a retriever
without a restart. :mod:`~kbrelease.integrations.langchain` needs
``pip install 'kbrelease[langchain]'``, :mod:`~kbrelease.integrations.llamaindex`
``pip install 'kbrelease[llamaindex]'``. Releases are read-only here: they are
built by ``kbrelease publish``.
"""
