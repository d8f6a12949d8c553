"""Fine-tune (and task-distil) a BERT-family encoder on a GLUE task or your own labelled table.

  distilbert-jax finetune --config configs/glue.py --config.task=rte \
      --config.model.path=MODEL_DIR --config.data.dir=GLUE_DIR --workdir runs/rte

MODEL_DIR is a Hugging Face or distilbert_jax directory, BERT or DistilBERT: a pretrained
encoder, a student from `distilbert-jax distill`, or a model fine-tuned already. Task distillation
(the paper's second step): add --config.teacher.path=FINETUNED_TEACHER and a loss.alpha_kd;
configs/glue_student.py is the recipe measured best (augmented data, the teacher's layers).
Your own data: --config.task=custom --config.data.train=train.csv --config.data.eval=dev.csv
--config.data.text_columns="('text',)" --config.data.label_column=label.

Defaults follow transformers' run_glue.py (AdamW 2e-5, batch 32, 3 epochs, length 128) with a
10% warm-up, except the learning rate of models narrower than 512: 1e-4 (optim.learning_rate).
Expected on a 2-core AMD EPYC CPU, all-MiniLM-L6-v2 on RTE (2,490 training pairs, 3 epochs,
about 10 minutes): see the retention table in BENCHMARKS.md, which
scripts/glue_retention.py prints.
"""
import ml_collections

# The defaults `distilbert-jax evaluate` shares (it runs where configs/ is not installed).
from distilbert_jax.tasks import defaults


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # Which job (distilbert_jax/jobs/) runs this config.
  config.job = "finetune"
  # A GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli) or "custom" (data.train/eval).
  config.task = "rte"

  config.model = ml_collections.ConfigDict()
  # The model to fine-tune: a Hugging Face directory or ours (convert.load_pretrained reads both).
  config.model.path = ""
  # Keep only these of its layers (a student initialised from a teacher); empty: all of them.
  config.model.layers = ()
  # With model.layers: "bert" or "distilbert" student; empty: the model's own architecture.
  config.model.type = ""
  # Initialise the task head afresh when the checkpoint's head has another number of outputs.
  config.model.reinit_head = False
  # Compute dtype: "auto" = bfloat16 where it is fast (accelerators; CPUs with native bfloat16).
  config.model.dtype = "float32"
  config.model.scan_layers = False
  config.model.remat_policy = "none"
  config.model.attention_impl = "xla"

  config.teacher = ml_collections.ConfigDict()
  # A model fine-tuned on the same task; empty: plain fine-tuning.
  config.teacher.path = ""
  config.teacher.dtype = "float32"
  config.teacher.scan_layers = False
  config.teacher.remat_policy = "none"
  config.teacher.attention_impl = "xla"

  config.data = ml_collections.ConfigDict()
  # "dir": GLUE_DIR in the GLUE download script's layout (or the files below); "tfds": TFDS glue/TASK.
  config.data.source = "dir"
  config.data.dir = ""
  config.data.tfds_data_dir = ""
  # Your own data (task "custom"; also SQuAD JSON files): .tsv, .csv or .jsonl.
  config.data.train = ""
  config.data.eval = ""
  # Task "custom": an unlabelled file to predict at the end (WORKDIR/predictions/test/custom.tsv).
  config.data.test = ""
  config.data.text_columns = defaults.TEXT_COLUMNS
  config.data.label_column = defaults.LABEL_COLUMN
  config.data.regression = False
  # The classes in label-id order; empty: the sorted labels of the training file.
  config.data.label_names = ()
  # Hold out this fraction of train (seeded) for evaluation instead of the dev set (for SST-2 and
  # STS-B when their dev sets are not at hand).
  config.data.holdout_fraction = 0.0
  # Also predict the GLUE task's unlabelled test split(s) at the end, in the GLUE server's
  # submission format (WORKDIR/predictions/test/RTE.tsv).
  config.data.predict_test = False
  config.data.holdout_seed = 0
  # A Hugging Face tokenizer directory; empty: model.path.
  config.data.tokenizer_dir = ""
  # Pairs longer than this are cut, the longer text first (run_glue.py).
  config.data.max_length = defaults.MAX_LENGTH
  # Batches are padded to the smallest of these that fits (one compilation each).
  config.data.bucket_lengths = defaults.BUCKET_LENGTHS
  config.data.shuffle_seed = 0
  # SQuAD (configs/squad.py): windows over long contexts overlap by doc_stride tokens.
  config.data.doc_stride = defaults.DOC_STRIDE
  config.data.max_query_length = defaults.MAX_QUERY_LENGTH

  config.loss = ml_collections.ConfigDict()
  config.loss.alpha_task = 1.0
  # KL to the teacher's softmax at temperature T, times T^2 (needs teacher.path).
  config.loss.alpha_kd = 0.0
  config.loss.temperature = 2.0
  # MSE of hidden states (needs teacher.path; a student of another width is projected to the
  # teacher's by a learned W_h, TinyBERT's).
  config.loss.alpha_hidden = 0.0
  # (student, teacher) hidden-state indices (0 = embeddings); empty: student layer i against the
  # teacher layer model.layers[i] it was copied from.
  config.loss.hidden_layer_map = ()
  # MSE of the pre-softmax attention scores of the layers hidden_layer_map pairs (TinyBERT, Jiao et
  # al., 2020, eq. 3; needs teacher.path and equal head counts).
  config.loss.alpha_attention = 0.0
  # KL(teacher || student) of the Q-Q, K-K and V-V self-attention relations (MiniLMv2, Wang et al.,
  # 2021; needs teacher.path; any widths and head counts).
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
  # 0: by the model's width (jobs/finetune.py default_learning_rate): 1e-4 below 512 (MiniLM
  # size; all-MiniLM-L6-v2 as a teacher did better at 1e-4 than at run_glue's 2e-5, BENCHMARKS.md),
  # 2e-5 from 512 up (BERT-base, DistilBERT-base: run_glue's).
  config.optim.learning_rate = 0.0
  config.optim.warmup_fraction = 0.1
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999
  config.optim.eps = 1e-8
  config.optim.weight_decay = 0.01
  config.optim.grad_clip_norm = 1.0

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 32
  config.train.grad_accum_steps = 1
  # Optimizer steps; <= 0 means num_epochs.
  config.train.num_steps = -1
  config.train.num_epochs = 3.0
  config.train.seed = 0
  config.train.log_every = 20
  # Evaluate every this many steps; 0: once an epoch (and always at the end).
  config.train.eval_every = 0
  config.train.checkpoint_every = 500
  config.train.keep_checkpoints = 2
  config.train.multihost = False
  config.train.progress_bar = True

  # TinyBERT's data augmentation (Jiao et al. 2020) for task distillation: the student learns
  # the teacher's outputs (computed once, cached in WORKDIR/augment) on variants of each training
  # example; see docs/finetuning.md. Needs teacher.path and loss.alpha_kd > 0.
  config.augment = ml_collections.ConfigDict()
  # Variants drawn per training example (TinyBERT's N_a = 20); 0: no augmentation.
  config.augment.num_variants = 0
  # Candidates per word: the MLM's K most likely words at the masked word (TinyBERT: 15).
  config.augment.top_k = 15
  # Probability that a variant replaces each word (TinyBERT's p_t = 0.4).
  config.augment.replace_prob = 0.4
  # Pair tasks: this many new pairs of the task's own training texts, labelled by the teacher
  # (AugSBERT's random sampling); 0: none.
  config.augment.num_pairs = 0
  config.augment.seed = 0
  # A model with a masked-LM head (Hugging Face or distilbert_jax directory) and its tokenizer.
  config.augment.mlm_path = ""
  # Texts are cut to this many MLM tokens; words past it are kept as they are.
  config.augment.mlm_max_length = 128
  # Words masked together in one MLM row, far apart in their text (1: TinyBERT's one at a time;
  # k > 1 runs the MLM about k times faster, each guess seeing k - 1 other masks).
  config.augment.words_per_row = 1
  # "joint": originals carry loss_task and loss_kd, variants loss_kd alone; "kd": TinyBERT's
  # first phase, loss_kd alone on both (its second phase, labels on the originals, is a run with
  # num_variants=0 from this run's export).
  config.augment.phase = "joint"

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = defaults.EVAL_BATCH_SIZE

  config.squad = ml_collections.ConfigDict()
  config.squad.version_2 = False
  config.squad.n_best_size = defaults.N_BEST_SIZE
  config.squad.max_answer_length = defaults.MAX_ANSWER_LENGTH
  config.squad.null_score_diff_threshold = defaults.NULL_SCORE_DIFF_THRESHOLD

  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1
  config.mesh.fsdp = 1
  config.mesh.tensor = 1

  # Write the best model (by the task's main metric) in Hugging Face format to WORKDIR/export.
  config.export = True
  return config
