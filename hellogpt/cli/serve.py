"""`hellogpt serve`: an OpenAI-compatible HTTP server and a chat page for a checkpoint or a Hugging Face model.

The model, its sampling defaults and the device come as in `chat` (--checkpoint/--from, --profile, --config,
--set); request fields override the `sample` settings one by one. FastAPI, uvicorn and torch are imported
inside the command, so `hellogpt --help` stays instant.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any, Optional

import typer

from hellogpt.cli.model_source import (
    CheckpointOption,
    DeviceOption,
    QuantizeOption,
    Gpt2BaseOption,
    LoadedModel,
    SourceOption,
    load_model,
    model_for_inference,
    one_model_source,
    with_flags,
)
from hellogpt.cli.options import ConfigOption, ProfileOption, SetOption, resolve_cli_config
from hellogpt.errors import UserError

API_KEY_ENV = "HELLOGPT_API_KEY"
GIL_SWITCH_SECONDS = 0.0005


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    checkpoint: CheckpointOption = None,
    source: SourceOption = None,
    gpt2base: Gpt2BaseOption = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on; 0.0.0.0 opens it to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port; 0 picks a free one.")] = 8000,
    api_key: Annotated[
        Optional[str],
        typer.Option("--api-key", envvar=API_KEY_ENV, help="Require `Authorization: Bearer KEY` on /v1 (or set HELLOGPT_API_KEY)."),
    ] = None,
    max_batch: Annotated[
        int, typer.Option("--max-batch", min=1, max=256, help="Requests decoded together; more wait for a free slot.")
    ] = 8,
    device: DeviceOption = None,
    quantize: QuantizeOption = None,
    profile: ProfileOption = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Serve a model over HTTP: the OpenAI API at /v1 (completions and chat, streamed or not) and a chat page at /.

    [dim]Examples: hellogpt serve --checkpoint quickstart | hellogpt serve --from gpt2 --port 8080 |
    hellogpt serve -k edgar_poe --host 0.0.0.0 --api-key SECRET[/]
    """
    source = one_model_source(checkpoint, source or gpt2base)
    _check_server_packages()
    import torch

    from hellogpt.serve.server import bind_socket, is_loopback

    # This thread loads the model and serves HTTP on one intra-op thread; decoding gets them all on the generation
    # thread (the scheduler's start-up says why).
    decode_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    loaded = load_model(checkpoint, source)
    run_config = resolve_cli_config(profile, config, set_, defaults=loaded.sample_defaults).config
    run_config = with_flags(run_config, {"system": {"device": device, "quantize": quantize}})
    model = model_for_inference(loaded, run_config, choose_threads=False)
    sock = bind_socket(host, port)
    if not is_loopback(host) and not api_key:
        typer.secho(
            f"warning: listening on {host} without --api-key: anyone who can reach this machine can use the model",
            fg="yellow", err=True,
        )
    _serve(loaded, model, run_config, sock, api_key, max_batch, decode_threads)


def _check_server_packages() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise UserError(f"hellogpt serve needs {error.name}: pip install 'hellogpt[serve]'") from None


def _serve(
    loaded: LoadedModel, model: Any, run_config: Any, sock: Any, api_key: Optional[str], max_batch: int, decode_threads: int
) -> None:
    from hellogpt.formatting import format_count
    from hellogpt.serve.app import ServedModel, create_app
    from hellogpt.serve.batching import Scheduler
    from hellogpt.serve.server import run_server, socket_url

    weight = model.transformer.wte.weight
    device_text = f"{weight.device} {'int8 weights' if run_config.system.quantize == 'int8' else str(weight.dtype).removeprefix('torch.')}"
    facts = {
        "parameters": format_count(model.num_parameters()),
        "context": str(model.config.block_size),
        "tokenizer": loaded.tokenizer.name,
        "device": device_text,
    }
    served = ServedModel(loaded.name, model.config.block_size, facts)
    # The generation thread holds the GIL between its tensor operations and takes it straight back after each; the
    # event loop, waiting for it, would get it only when the interpreter forces a switch (5 ms by default): every
    # first token and every chunk of text would wait that long.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    scheduler = Scheduler(model, loaded.tokenizer, max_batch, threads=decode_threads)
    app = create_app(scheduler, loaded.tokenizer, served, run_config.sample, api_key)
    try:
        scheduler.start()
    except BaseException:
        sys.setswitchinterval(switch_interval)
        sock.close()
        raise
    url = socket_url(sock)

    def announce() -> None:
        typer.echo(
            f"hellogpt serve: {loaded.info.get('model', loaded.name)} as {served.id!r} ({facts['parameters']} parameters, "
            f"context {facts['context']}) on {device_text}, up to {max_batch} requests batched in "
            f"{scheduler.layout.describe()} on {scheduler.decode_threads} thread{'s' if scheduler.decode_threads > 1 else ''} "
            f"(pid {os.getpid()})"
        )
        typer.echo(f"  chat page   {url}")
        typer.echo(f"  OpenAI API  {url}v1  (model {served.id!r}{', API key required' if api_key else ''})")
        typer.echo("Ctrl-C stops.")

    try:
        run_server(app, sock, on_stop=scheduler.request_stop, on_ready=announce)
    finally:
        scheduler.stop(timeout=10)
        sock.close()
        sys.setswitchinterval(switch_interval)
    typer.echo("stopped")
