"""Sources: listing and mirroring local folders and S3 prefixes, every key made a safe relative path once, at listing."""
