"""Measuring: perplexity, prefill/decode benchmarks, the hardware report, method comparison and its report."""
