"""The tasks a model is fine-tuned and evaluated on: GLUE and labelled tables, SQuAD, sentence embeddings."""
