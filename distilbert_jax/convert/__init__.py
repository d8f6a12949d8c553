"""The one converter between Hugging Face checkpoints and our Flax parameters.

    model, params = convert.load_pretrained(path, head="masked_lm")   # HF dir or our Flax dir
    convert.save_pretrained(model, params, out_dir)   # HF PyTorch dir: config.json + model.safetensors
    convert.save_flax(model, params, out_dir)         # our Flax dir

Modules:
    names        ConversionError, our scopes, transformers class names, PyTorch names of our paths
    layout       expected paths and shapes, the unrolled and scanned layer layouts, fitting a tree
    huggingface  state dicts <-> our parameters, Hugging Face weight files, save_pretrained
    flax_format  our Flax directory: save_flax, and its parameters into any head by path
    hub          Hugging Face Hub repo ids (ID or ID@REVISION) -> snapshot directories in the cache
    directories  what both directory kinds share: config.json, tokenizer files, atomic writes
    sentence_transformers  modules.json and 1_Pooling/: the pooling a directory names, and copying it
    loading      load_pretrained, for either kind of directory
    student      student initialisation from a teacher's config and parameters
    command      the `distilbert-jax convert` command (convert_main)

Every submodule logs under this package's logger, `log`.
"""
import logging

from distilbert_jax.convert import hub
from distilbert_jax.convert.command import convert_main
from distilbert_jax.convert.directories import SOURCE_ATTR, TOKENIZER_FILES, read_model_config
from distilbert_jax.convert.flax_format import FLAX_HEAD_KEY, save_flax
from distilbert_jax.convert.huggingface import (flax_tree_to_state_dict, params_to_state_dict, read_hf_state_dict,
                                                save_pretrained, state_dict_to_params)
from distilbert_jax.convert.layout import stack_layers, unstack_layers
from distilbert_jax.convert.loading import load_pretrained
from distilbert_jax.convert.names import ConversionError, architecture_name, head_from_architectures
from distilbert_jax.convert.sentence_transformers import SentencePooling, read_sentence_pooling
from distilbert_jax.convert.student import default_student_layers, student_config_of, student_from_teacher

log = logging.getLogger(__name__)  # the parent of the submodules' loggers: its level quiets them all

__all__ = ["FLAX_HEAD_KEY", "SOURCE_ATTR", "TOKENIZER_FILES", "ConversionError", "architecture_name",
           "convert_main", "default_student_layers", "hub", "flax_tree_to_state_dict", "head_from_architectures",
           "load_pretrained", "log", "params_to_state_dict", "read_hf_state_dict", "read_model_config",
           "read_sentence_pooling", "save_flax", "save_pretrained", "SentencePooling", "stack_layers",
           "state_dict_to_params", "student_config_of", "student_from_teacher", "unstack_layers"]
