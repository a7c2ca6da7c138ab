"""Format backends: read models, enumerate their weights, and rewrite their graphs."""
