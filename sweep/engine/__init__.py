"""The engine: workers, cached runs, memory budget and forwards (torch)."""
