"""The workloads a sweep measures (the Workload protocol of base.py, the list in registry.py): the digits
models' accuracy points (digits) and MiniLM sentence embeddings (minilm)."""
