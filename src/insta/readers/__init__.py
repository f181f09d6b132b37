"""Pool readers: promptsource (P3), NIV2 checkouts, and generic tables (JSONL/CSV/HF datasets)."""
