"""inforank's read path: filtered and reranked search, alignment, HTTP service and client.

The HTTP client (:mod:`retrieval.client`) is imported on its own by backends that only query
with vectors; nothing here imports torch.
"""

__all__ = ["align", "client", "search"]
