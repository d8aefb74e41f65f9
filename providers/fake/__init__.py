"""A fake OpenAI/Anthropic-compatible provider server for tests and benchmarks (never imported by the app)."""
