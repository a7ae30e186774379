"""Long-term memory: the embedder, the FAISS index, and LongTermMemory keeping them in step
with the database. Never calls an LLM."""
