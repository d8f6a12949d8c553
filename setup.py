"""distilbert_jax: DistilBERT and BERT in JAX/Flax: models, converter, distillation."""
import setuptools

setuptools.setup(
    name="distilbert_jax",
    version="0.1.0",
    description="DistilBERT and BERT in JAX/Flax: Hugging Face parity, weight conversion, sharded distillation.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["distilbert_jax", "distilbert_jax.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "grain>=0.2.18",
        "ml-collections>=1.0",
        "tensorflow-datasets>=4.9",
        "transformers>=5.0",
        "tokenizers>=0.21",
        "safetensors>=0.5",
        "numpy",
        "scipy",
        "tqdm",
        "tensorboardX",
        "matplotlib",
        # gs:// work directories, models and data: etils.epath over fsspec's gcsfs (orbax writes
        # its checkpoints there through tensorstore); google-cloud-storage comes with gcsfs.
        "etils[epath]",
        "gcsfs>=2025.1",
    ],
    extras_require={
        # A CPU build of torch: the PyTorch side of conversion and of the parity tests.
        "torch": ["torch>=2.4"],
        "test": ["pytest>=8", "pytest-xdist>=3", "scikit-learn", "pyflakes>=3", "sentence-transformers>=6.2",
                 "gcp-storage-emulator>=2024.8"],  # Cloud Storage on 127.0.0.1 for the gs:// tests
        # `distilbert-jax export --format onnx`: onnxruntime and jax2onnx's own requirements; jax2onnx
        # itself is installed with --no-deps (make setup does), as it pins an older orbax-checkpoint.
        "onnx": ["onnx>=1.20", "onnx-ir>=1.1", "onnxruntime>=1.20", "equinox", "dm-pix", "einops"],
        # `distilbert-jax compile` for Cloud TPU targets on any machine: libtpu describes the
        # slices and compiles for them (jax's own extra pins the libtpu of its release).
        "tpu": ["jax[tpu]"],
        # ... and for NVIDIA GPU targets: the CUDA PJRT plugin alone, without the CUDA libraries.
        # Its version must be jax's. On a machine without CUDA it logs a line on every jax import.
        "cuda": ["jax-cuda12-pjrt==0.10.2"],
    },
    entry_points={"console_scripts": ["distilbert-jax=distilbert_jax.main:run"]},
)
