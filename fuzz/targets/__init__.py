"""One module per reader. Each has ``seeds() -> list[Seed]``, ``run(path)`` and optionally
``mutate(data, rng, others) -> bytes`` (default: fuzz.mutate.byte_mutation)."""
