"""inforank's read path: filtered and reranked search, alignment, HTTP service and client."""
