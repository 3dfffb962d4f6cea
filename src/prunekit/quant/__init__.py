"""Weight quantization: integer grids (``grid``), GPTQ (``gptq``), and how they compose with pruning (``compose``)."""
