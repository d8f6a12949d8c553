"""DistilBERT and BERT in JAX/Flax: models, Hugging Face conversion, sharded distillation."""
