"""Constants of the engine that light modules (configs, the CLI's parser) read without importing
torch."""

#: Tokens drawn for everything that is computed on a token sample (reconstruction, spread) unless a
# command says otherwise.
SAMPLE_TOKENS = 2048
