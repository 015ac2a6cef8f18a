"""ctr-zoo: a Keras 3 model zoo for CTR/ranking models with cohort-contrastive auxiliary learning (C2AL)."""

from setuptools import find_packages, setup

setup(
    name="ctr-zoo",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11",
    packages=find_packages(include=["layers", "layers.*", "zoo", "zoo.*", "beam_jobs", "beam_jobs.*"]),
    install_requires=[
        "tensorflow==2.21.*",
        "tensorboard==2.21.*",  # the Keras TensorBoard callback writes through it
        "tensorflow-serving-api==2.21.*",  # PredictionLog / PredictRequest protos of the warm-up file
        "keras>=3.12",
        "keras-rs>=0.4",
        "apache-beam[tfrecord]==2.77.*",
        "protobuf<7",
        "numpy",
        "pyyaml",
        "matplotlib",  # cohort-divergence heatmaps and the C2AL report's plots (PNG, Agg backend)
    ],
    extras_require={
        "jax": ["jax[cpu]>=0.4.30"],
        "dev": ["pytest>=8", "jax[cpu]>=0.4.30", "import-linter>=2.17"],  # lint-imports: .importlinter
    },
)
