"""The data index (seed 003): the exact set of input files of every source, and access to it.

- :mod:`~kbrelease.index.data_index` — the Parquet index per source and ``bundle.yaml``;
- :mod:`~kbrelease.index.bounded` — reading untrusted Parquet within limits;
- :mod:`~kbrelease.index.bundles` — bundle specs resolved into versioned indexes;
- :mod:`~kbrelease.index.query` — listing and filtering an index page by page;
- :mod:`~kbrelease.index.archive` — batch download as one tar stream;
- :mod:`~kbrelease.index.client` — the Python client of the data-index API.
"""
