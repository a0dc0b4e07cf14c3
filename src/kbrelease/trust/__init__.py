"""The trust boundary: what untrusted input must pass before the rest of kbrelease sees it.

Packages, bucket keys, files of a source, images, HTTP parameters and filter
strings come from people and machines kbrelease does not control. Every entry
(library facade, CLI, HTTP, package import, data-index read) checks them here,
once, with one grammar per kind of value:

- :mod:`~kbrelease.trust.names`: release, source, collection, bundle, channel
  and environment names;
- :mod:`~kbrelease.trust.paths`: relative paths inside a root, and the one
  helper that opens a file only after resolving it inside its real root;
- :mod:`~kbrelease.trust.filters`: literals for Milvus filter expressions
  (no string interpolation of raw values);
- :mod:`~kbrelease.trust.where`: the grammar of user metadata filters
  (``--where``), parsed into a tree and written out with those literals;
- :mod:`~kbrelease.trust.redact`: secrets (URL userinfo, tokens, keys) removed
  from anything printed, logged, answered or written.

See docs/security.md for what is trusted and what each check protects.
"""

from kbrelease.trust.filters import eq, str_literal
from kbrelease.trust.names import check_name
from kbrelease.trust.paths import contained, safe_relpath
from kbrelease.trust.redact import redact, redact_url

__all__ = ["check_name", "contained", "eq", "redact", "redact_url", "safe_relpath", "str_literal"]
