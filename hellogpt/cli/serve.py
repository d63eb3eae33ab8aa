"""`hellogpt serve`: an OpenAI-compatible HTTP server and a chat page for a checkpoint or a Hugging Face model.

The model, its sampling defaults and the device come as in `chat` (--checkpoint/--from, --profile, --config,
--set); request fields override the `sample` settings one by one. FastAPI, uvicorn and torch are imported
inside the command, so `hellogpt --help` stays instant.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Annotated, Any, Optional

import typer

from hellogpt.cli.model_options import (
    CheckpointOption,
    DeviceOption,
    Gpt2BaseOption,
    QuantizeOption,
    SourceOption,
    one_model_source,
    with_flags,
)
from hellogpt.cli.options import ConfigOption, ProfileOption, SetOption, resolve_cli_config
from hellogpt.errors import UserError
from hellogpt.model_source import LoadedModel, float32_scoring_model, load_model, model_for_inference
from hellogpt.serve.limits import ServeLimits

API_KEY_ENV = "HELLOGPT_API_KEY"
# Exit status when the generation thread failed and the server stopped (a bug or the machine, not the user).
GENERATION_FAILED_EXIT = 1
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
    max_waiting: Annotated[
        int, typer.Option("--max-waiting", min=0, help="Requests that may wait for a slot; more get 429 with Retry-After.")
    ] = ServeLimits.max_waiting,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", min=1, help="Largest request body (4 MiB); larger ones get 413 unread.")
    ] = ServeLimits.max_body_bytes,
    max_prompt_chars: Annotated[
        int, typer.Option("--max-prompt-chars", min=1, help="Longest prompt or conversation, in characters, before tokenising.")
    ] = ServeLimits.max_prompt_chars,
    max_messages: Annotated[
        int, typer.Option("--max-messages", min=1, help="Most messages in one chat request.")
    ] = ServeLimits.max_messages,
    max_connections: Annotated[
        int, typer.Option("--max-connections", min=1, help="Open connections and requests in flight; beyond, 503.")
    ] = ServeLimits.max_connections,
    keep_alive_timeout: Annotated[
        float, typer.Option("--keep-alive-timeout", min=0.1, help="Seconds an idle kept-alive connection stays open.")
    ] = ServeLimits.keep_alive_seconds,
    read_timeout: Annotated[
        float, typer.Option("--read-timeout", min=0.1, help="Seconds a request's headers, then its body, may take to arrive.")
    ] = ServeLimits.read_timeout_seconds,
    allow_origin: Annotated[
        Optional[list[str]],
        typer.Option("--allow-origin", help="Let browser pages from ORIGIN (e.g. http://localhost:3000, or *) call the API; repeatable."),
    ] = None,
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
    # Log-probabilities come from fp32 weights even when decoding is bf16 or int8 (docs/serving.md#the-api says why):
    # copied now, before the decoding model is made from the loaded one in place.
    scoring_model = float32_scoring_model(loaded, run_config)
    model = model_for_inference(loaded, run_config, choose_threads=False)
    sock = bind_socket(host, port)
    if not is_loopback(host) and not api_key:
        typer.secho(
            f"warning: listening on {host} without --api-key: anyone who can reach this machine can use the model",
            fg="yellow", err=True,
        )
    limits = ServeLimits(
        max_body_bytes=max_body_bytes, max_prompt_chars=max_prompt_chars, max_messages=max_messages,
        max_waiting=max_waiting, max_connections=max_connections, keep_alive_seconds=keep_alive_timeout,
        read_timeout_seconds=read_timeout,
    )
    access = _Access(api_key, is_loopback(host), tuple(allow_origin or ()))
    _serve(loaded, model, scoring_model, run_config, sock, access, limits, max_batch, decode_threads)


@dataclass(frozen=True)
class _Access:
    """Who may call the server: the key it asks for, whether it listens on loopback, the browser origins let in."""

    api_key: Optional[str]
    loopback: bool
    allowed_origins: tuple[str, ...]


def _check_server_packages() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise UserError(f"hellogpt serve needs {error.name}: pip install 'hellogpt[serve]'") from None


def _reply_end_id(loaded: LoadedModel) -> Optional[int]:
    """A chat model's replies end at its end-of-turn token; None: the tokenizer's end of text."""
    if loaded.chat_template is None:
        return None
    from hellogpt.data.chat_template import turn_end_id

    return turn_end_id(loaded.tokenizer)


def _serve(
    loaded: LoadedModel, model: Any, scoring_model: Any, run_config: Any, sock: Any, access: _Access,
    limits: ServeLimits, max_batch: int, decode_threads: int,
) -> None:
    from hellogpt.formatting import format_count
    from hellogpt.serve.app import ServedModel, create_app
    from hellogpt.serve.batching import Scheduler
    from hellogpt.serve.server import build_server, socket_url

    weight = model.input_embeddings().weight
    device_text = f"{weight.device} {'int8 weights' if run_config.system.quantize == 'int8' else str(weight.dtype).removeprefix('torch.')}"
    facts = {
        "parameters": format_count(model.num_parameters()),
        "context": str(model.config.block_size),
        "tokenizer": loaded.tokenizer.name,
        "device": device_text,
        # How /v1/chat/completions turns messages into a prompt (the chat page says which kind of model it talks to).
        "template": "chatml" if loaded.chat_template is not None else "transcript",
    }
    served = ServedModel(loaded.name, model.config.block_size, facts, chat_template=loaded.chat_template)
    # The generation thread holds the GIL between its tensor operations and takes it straight back after each; the
    # event loop, waiting for it, would get it only when the interpreter forces a switch (5 ms by default): every
    # first token and every chunk of text would wait that long.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    api_key = access.api_key
    scheduler = Scheduler(
        model, loaded.tokenizer, max_batch, threads=decode_threads, max_waiting=limits.max_waiting,
        measure=run_config.system.measure, eot_id=_reply_end_id(loaded), scoring_model=scoring_model,
    )
    app = create_app(
        scheduler, loaded.tokenizer, served, run_config.sample, api_key, limits, access.loopback, access.allowed_origins
    )
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

    server = build_server(app, on_stop=scheduler.request_stop, on_ready=announce, limits=limits)
    scheduler.on_failure = lambda: setattr(server, "should_exit", True)
    try:
        server.run(sockets=[sock])
    finally:
        scheduler.stop(timeout=10)
        sock.close()
        sys.setswitchinterval(switch_interval)
    if scheduler.failure:
        typer.secho(f"error: {scheduler.failure}: every request was ended and the server stopped", fg="red", err=True)
        raise typer.Exit(GENERATION_FAILED_EXIT)
    typer.echo("stopped")
