"""The workloads a sweep measures: the digits models' accuracy points (digits) and MiniLM sentence embeddings
(minilm)."""
