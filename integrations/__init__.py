"""Thin LlamaIndex and LangChain adapters over the ragzip core."""
