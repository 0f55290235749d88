from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="nt_llm",
    version="0.1.0",
    description="NeuroTrails (dynamic sparse heads) for LLaMA pretraining on the Hugging Face stack",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["nt_llm", "nt_llm.*"]),
    include_package_data=True,
    # torch is a range so that a user's CUDA build is kept; the Makefile pins the CPU wheel first.
    install_requires=[
        "torch>=2.4,<3",
        "transformers>=5.24,<6",
        "accelerate>=1.10",
        "datasets>=4.0",
        "safetensors>=0.4",
        "sentencepiece>=0.2.3,<0.3",  # the embedded 4k tokenizer's pieces are checked against a digest trained with it
        "protobuf>=4.0",  # transformers converts SentencePiece tokenizers to fast ones through it
        "huggingface_hub>=1.0",
        "pyyaml>=6.0",
        "tqdm>=4.60",
    ],
    entry_points={"console_scripts": ["nt-export=nt_llm.export:main"]},
    extras_require={
        "dev": ["pytest>=8.0", "matplotlib>=3.7", "ruff==0.17.6"],  # matplotlib: eval/reproduce.py plots
        "eval": ["lm-eval>=0.4.13"],
        "deepspeed": ["deepspeed>=0.16"],
    },
)
