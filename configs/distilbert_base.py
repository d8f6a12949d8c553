"""The paper's recipe: DistilBERT-base distilled from bert-base-uncased (Sanh et al., 2019).

Student: 6 layers initialised from teacher layers 0, 2, 4, 7, 9, 11 (extract_distilbert.py);
losses 5.0 loss_ce + 2.0 loss_mlm + 1.0 loss_cos at T = 2 (the paper's author, GitHub huggingface/transformers#2013);
AdamW lr 5e-4, betas (0.9, 0.98), eps 1e-6, 5% warm-up, clipping 5.0; about 4,000 sequences per
optimizer step (4,096 here, 8 micro-batches of 512); 3 epochs; sequences up to 512 tokens.

Command (a Cloud TPU VM or GPU machine; teacher converted beforehand with
`distilbert-jax convert --to flax bert-base-uncased/ teachers/bert-base-uncased`):

  distilbert-jax distill --config configs/distilbert_base.py --workdir runs/distilbert_base \
    --config.teacher.path=teachers/bert-base-uncased \
    --config.data.sources='("tfds:wikipedia/20230601.en:train:text","tfds:bookcorpus:train:text")'

Expected: not yet measured by this project (no accelerator time for a 3-epoch run). The paper
reports GLUE dev 77.0 for its student after 90 hours on 8 x 16 GB V100; the rate to expect here
is printed as tokens_per_second and mfu in metrics.jsonl.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # Which job (distilbert_jax/jobs/) runs this config: "distill" (also teacher-free MLM pretraining) or "finetune".
  config.job = "distill"

  config.teacher = ml_collections.ConfigDict()
  # A Hugging Face directory or our Flax directory (convert.load_pretrained reads both).
  config.teacher.path = ""
  # The teacher's head: masked_lm gives the logits that loss_ce needs; base for hidden losses only.
  config.teacher.head = "masked_lm"
  # Dict of Hugging Face config fields for a random teacher (tests and benchmarks only).
  config.teacher.random_config = ml_collections.ConfigDict()
  # Compute dtype of the frozen teacher: "auto" = bfloat16 on GPU/TPU and on CPUs with native
  # bfloat16 dot products (models.resolve_dtype), float32 on other CPUs.
  config.teacher.dtype = "auto"
  # How the teacher's encoder is compiled (see models/encoder_stack.py and models/attention.py).
  config.teacher.scan_layers = True
  config.teacher.remat_policy = "none"
  config.teacher.attention_impl = "dot_product"

  config.student = ml_collections.ConfigDict()
  # "teacher": copy teacher layers (the paper; -3.69 GLUE without it); "random": fresh init.
  config.student.init = "teacher"
  # "distilbert" (no token types, no pooler) or "bert" (a shallower BERT, same names).
  config.student.type = "distilbert"
  # Teacher layers that become the student's; empty = evenly spaced (0,2,4,7,9,11 for 12 -> 6).
  config.student.layers = (0, 2, 4, 7, 9, 11)
  # Hugging Face config fields for student.init="random" (empty: the teacher's shape).
  config.student.random_config = ml_collections.ConfigDict()
  # Fields changed on top of either init, e.g. {"dropout": 0.0}.
  config.student.config_overrides = ml_collections.ConfigDict()
  # Compute dtype ("auto" as the teacher's); parameters stay float32. On CPU a bfloat16 student
  # measured no faster than float32 (BENCHMARKS.md): "float32" with a bfloat16 teacher is fastest.
  config.student.dtype = "auto"
  config.student.scan_layers = True
  # Rematerialise each layer in the backward pass: "none", "dots" or "full".
  config.student.remat_policy = "none"
  config.student.attention_impl = "dot_product"

  config.data = ml_collections.ConfigDict()
  # Source specs: "embedded" (the generated stdlib corpus), a text file's path or "text:GLOB",
  # "jsonl:GLOB:FIELD", "tsv:PATH:COL1,COL2", "tfds:NAME:SPLIT:FIELD" (see data/sources.py).
  config.data.sources = ("tfds:wikipedia/20230601.en:train:text", "tfds:bookcorpus:train:text")
  # A Hugging Face tokenizer directory; empty = the teacher's directory.
  config.data.tokenizer_dir = ""
  # Where the token cache lives; empty = WORKDIR/token_cache.
  config.data.cache_dir = ""
  # Longer documents are split into chunks with [CLS]/[SEP] re-added (binarized_data.py).
  config.data.max_length = 512
  # Sequences shorter than this are dropped (the original drops 11 tokens or fewer).
  config.data.min_length = 12
  # Pack sentences into full-length sequences instead of one per row.
  config.data.pack = False
  # Padded lengths: batches are grouped by length into these buckets (one compile each).
  config.data.bucket_lengths = (64, 128, 256, 512)
  config.data.shuffle_seed = 0

  config.mask = ml_collections.ConfigDict()
  # 15% of real tokens predicted, of which 80% [MASK], 10% random, 10% kept (BERT, section 3.1).
  config.mask.mlm_probability = 0.15
  config.mask.mask_prob = 0.8
  config.mask.random_prob = 0.1
  # A .npy of token counts (distilbert-jax token-counts) for count^-smoothing weights; empty = uniform.
  config.mask.token_counts = ""
  config.mask.smoothing = 0.7

  config.loss = ml_collections.ConfigDict()
  config.loss.alpha_ce = 5.0
  config.loss.alpha_mlm = 2.0
  config.loss.alpha_cos = 1.0
  config.loss.alpha_mse = 0.0
  config.loss.alpha_hidden = 0.0
  config.loss.temperature = 2.0
  # KL (and MSE) over masked tokens only, instead of every real token.
  config.loss.ce_masked_only = False
  # Run the vocabulary projection (student and teacher) only at the masked positions: exact for
  # loss_mlm and, with ce_masked_only, for loss_ce and loss_mse; needs ce_masked_only when those are on.
  config.loss.logits_at_masked_only = False
  # (student, teacher) hidden-state indices for loss_hidden (0 = embeddings); empty = the
  # student's layers against the teacher layers they were copied from.
  config.loss.hidden_layer_map = ()
  # KL(teacher || student) of the Q-Q, K-K and V-V self-attention relations (MiniLMv2, Wang et al.,
  # 2021), over real tokens; any widths and head counts.
  config.loss.alpha_relation = 0.0
  # Relation heads R, which divide both widths; 0: the student's attention heads. MiniLMv2 uses 48
  # for base-size teachers (64 for large ones).
  config.loss.relation_heads = 0
  # (student, teacher) 0-based layers of the relations; empty: the last layer of each.
  config.loss.relation_layers = ()
  # MiniLM (Wang et al., 2020, eq. 6-8) at loss.relation_layers: KL(teacher || student) of the
  # attention distributions, and of the value relations softmax(V V^T / sqrt(d_k)), head by head
  # (needs teacher.path and equal head counts; any widths).
  config.loss.alpha_attention_kl = 0.0
  config.loss.alpha_value_relation = 0.0

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 5e-4
  config.optim.warmup_fraction = 0.05
  config.optim.b1 = 0.9
  config.optim.b2 = 0.98
  config.optim.eps = 1e-6
  # Applied to kernels and embeddings only, never to biases or LayerNorm.
  config.optim.weight_decay = 0.0
  config.optim.grad_clip_norm = 5.0

  config.train = ml_collections.ConfigDict()
  # Sequences per optimizer step, over all processes (the paper: about 4,000).
  config.train.batch_size = 4096
  # Micro-batches per step, accumulated inside the jitted step.
  config.train.grad_accum_steps = 8
  # Optimizer steps; <= 0 means num_epochs over the corpus.
  config.train.num_steps = -1
  config.train.num_epochs = 3.0
  config.train.seed = 0
  config.train.log_every = 50
  config.train.checkpoint_every = 1000
  config.train.keep_checkpoints = 3
  # Call jax.distributed.initialize() (several processes, e.g. a TPU pod slice or a Slurm job).
  config.train.multihost = False
  config.train.progress_bar = True

  config.mesh = ml_collections.ConfigDict()
  # Devices per axis; -1 takes the rest. FSDP shards parameters, tensor shards heads/mlp/vocab.
  config.mesh.data = -1
  config.mesh.fsdp = 1
  config.mesh.tensor = 1

  # Write the student in Hugging Face format to WORKDIR/export at the end.
  config.export = True
  # Held-out sentences for the final teacher/student report (a text file, "embedded", or ""
  # for none); needs the export.
  config.eval_heldout = ""
  return config
