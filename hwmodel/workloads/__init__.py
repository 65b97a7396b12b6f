"""Workloads a sweep measures besides the digits models: MiniLM sentence embeddings (minilm)."""
