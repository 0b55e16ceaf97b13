"""Storage: S3 objects (``storage.objects``) and the watchlist's vectors in Milvus (``storage.vectors``)."""
