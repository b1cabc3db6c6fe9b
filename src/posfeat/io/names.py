"""Names every command takes, kept light (no torch) for the CLI's parser: the bundled pair's
name."""

#: The bundled offline model (all-MiniLM-L6-v2) and its SAE, by the name ``--model`` and ``--sae``
# take; the default.
BUNDLED = "minilm"
BUNDLED_MODEL = BUNDLED
BUNDLED_SAE = BUNDLED
