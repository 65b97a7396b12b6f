"""A byte-level language model on the low-bit-width accumulator (docs/lm.md): the pinned corpus, the model,
float training, and the accumulator evaluation (bits per byte, KL and top-1 agreement to the fp32 row)."""
