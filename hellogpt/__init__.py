"""hellogpt: train, fine-tune and talk to GPT language models on your own texts."""

__version__ = "0.1.0"
