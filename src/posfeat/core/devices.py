"""The device names every command accepts (kept apart from ``tensors`` so the CLI parser needs no
torch)."""

DEVICES = ("auto", "cpu", "cuda")
