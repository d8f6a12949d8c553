"""What every part of the converter shares: its error, the scopes of our parameter trees, the
transformers class names, and the PyTorch name of one of our parameter paths.

Our parameter paths are those of Hugging Face's former Flax classes (`bert/encoder/layer/0/...`),
so a PyTorch name is the path joined with dots, with the leaf renamed (kernel -> weight,
transposed; embedding -> weight; LayerNorm scale -> weight).
"""
from __future__ import annotations

from distilbert_jax import errors, models


class ConversionError(errors.Error, ValueError):
  """A checkpoint that cannot be read or does not fit the model; the message is one line."""


# The scope of the base model under a head (none for the base model itself).
BASE_SCOPE = {"bert": "bert", "distilbert": "distilbert"}
BASE_PREFIX = {t: scope + "." for t, scope in BASE_SCOPE.items()}
# Top-level scopes of the heads' own parameters, next to the base model's.
HEAD_SCOPES = {"bert": ("cls", "classifier", "qa_outputs"),
               "distilbert": ("vocab_transform", "vocab_layer_norm", "vocab_projector", "pre_classifier",
                              "classifier", "qa_outputs")}
BODY_SCOPES = {"bert": ("embeddings", "encoder", "pooler"), "distilbert": ("embeddings", "transformer")}
LAYER_PATH = {"bert": ("encoder", "layer"), "distilbert": ("transformer", "layer")}
CLASS_PREFIX = {"bert": "Bert", "distilbert": "DistilBert"}
CLASS_SUFFIX = {"base": "Model", "masked_lm": "ForMaskedLM", "pretraining": "ForPreTraining",
                "sequence_classification": "ForSequenceClassification", "multiple_choice": "ForMultipleChoice",
                "token_classification": "ForTokenClassification", "question_answering": "ForQuestionAnswering"}


def architecture_name(config, head: str) -> str:
  """The transformers class name, e.g. BertForMaskedLM."""
  return CLASS_PREFIX[config.model_type] + CLASS_SUFFIX[head]


def head_from_architectures(hf_config: dict, source: str = "config.json") -> str:
  """The head for a Hugging Face config's `architectures`, e.g. BertForMaskedLM -> masked_lm."""
  names = {CLASS_PREFIX[t] + CLASS_SUFFIX[h]: h for t, heads in models.HEADS_BY_TYPE.items() for h in heads}
  for arch in hf_config.get("architectures") or ():
    if arch in names:
      return names[arch]
  raise ConversionError(f"{source}: cannot infer the head from architectures={hf_config.get('architectures')}; "
                        f"pass head= one of {list(CLASS_SUFFIX)}")


def _hf_name(path: tuple) -> tuple[str, bool]:
  """(PyTorch name, whether the array is transposed) for one of our parameter paths."""
  *scopes, leaf = path
  transpose = leaf == "kernel"
  leaf = {"kernel": "weight", "embedding": "weight", "scale": "weight"}.get(leaf, leaf)
  return ".".join((*scopes, leaf)), transpose


def _one_line(error: Exception) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0] if text else ''}"
