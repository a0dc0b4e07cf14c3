"""Integrity monitoring: completeness, checksums, sync delay and storage of the live release, with alerts once per incident."""
