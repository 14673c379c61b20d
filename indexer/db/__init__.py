"""SQL persistence of collections, running statistics, items and alignment maps."""
