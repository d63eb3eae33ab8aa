"""Checkpoints: the file format, where files go, and loading them into a model (LoRA bases merged).

Everything that reads a checkpoint (chat, serve, eval, export, info, and training itself) comes here, so that no
inference path imports `hellogpt.train`. Import the module you need (`hellogpt.checkpoints.format`, `.paths`,
`.loading`, `.lora_base`); this package re-exports nothing.
"""
