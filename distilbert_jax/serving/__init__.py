"""Putting a trained model to work: predictions and embeddings on new text, serving exports.

  predict.py   `distilbert-jax predict`: labels, scores or answer spans for each input line
  embed.py     `distilbert-jax embed`: sentence embeddings, pooled as the model says
  export.py    `distilbert-jax export`: StableHLO (jax.export) and ONNX artifacts for servers
  inputs.py    the input files both commands read (TSV, CSV, JSON lines, text, stdin)
"""
