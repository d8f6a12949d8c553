"""Training data for distillation: text sources, the token cache, batches and MLM masking.

sources.py reads the texts a source spec names; tokenizer.py loads the fast tokenizer;
sequence_writer.py frames token ids into sequences on disk; token_cache.py builds and opens
the cache (and re-exports the names its callers use from the modules before it);
token_counts.py counts ids for MLM smoothing; input_pipeline.py cuts the cache into batches;
masking.py masks them; corpus.py is the small corpus embedded for tests and examples.

`InputPipelineError` is the one error every stage raises for bad data, specs or settings.
"""
from distilbert_jax import errors


class InputPipelineError(errors.Error, ValueError):
  """A one-line problem with the training data, a source spec or the tokenizer."""
