"""Releases: build, verify, gate, switch, search, compare, collect.

- :mod:`~kbrelease.release.build` — a release database from a data index
  (:meth:`Builder.build_source` is the unit; :mod:`~kbrelease.release.shards` runs it per shard);
- :mod:`~kbrelease.release.verify`, :mod:`~kbrelease.release.quality` — completeness and the golden-query gate;
- :mod:`~kbrelease.release.registry`, :mod:`~kbrelease.release.lifecycle` — the registry and the live
  pointer (switch, rollback, gc, history);
- :mod:`~kbrelease.release.search`, :mod:`~kbrelease.release.follow` — searching a release and following the live one;
- :mod:`~kbrelease.release.diff`, :mod:`~kbrelease.release.check`, :mod:`~kbrelease.release.manifest`,
  :mod:`~kbrelease.release.schema`, :mod:`~kbrelease.release.files` — comparisons, compatibility checks,
  the manifest on disk and its versions, the input files of a release.
"""
