"""The Typer app. Each command lives in p4q_export/commands/<name>.py; this file only registers
them and turns library errors into exit codes (2 bad input, 1 failed check)."""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Annotated, NoReturn

import typer

from .commands import _common
from .errors import CheckFailed, Interrupted, UserError, note_signal, pending_signal

try:
    # recent typer vendors click as typer._click and raises its ClickException (no public alias)
    from typer._click import ClickException
except ImportError:  # older typer raises the click package's
    from click import ClickException

app = typer.Typer(
    name="p4q-export",
    help="P4Q for CLIP: quantize, recover accuracy with learned prompts + a low-bit adapter, "
    "export INT8 QDQ ONNX / TensorRT, validate against PyTorch, benchmark on CPU, GPU and Jetson.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    json_out: Annotated[bool, typer.Option("--json", help="Every command prints one JSON object on stdout.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging on stderr.")] = False,
    max_image_pixels: Annotated[int | None, typer.Option(
        "--max-image-pixels", min=0, metavar="N",
        help="Refuse image files of more than N pixels before decoding them, a guard against decompression "
             "bombs (default 89,478,485, Pillow's; 0 = no limit). Also P4Q_MAX_IMAGE_PIXELS.")] = None,
) -> None:
    _common.set_global_json(json_out)
    if max_image_pixels is not None:
        from .data.images import PIXEL_LIMIT_ENV

        os.environ[PIXEL_LIMIT_ENV] = str(max_image_pixels)  # data-loading workers inherit it
    logging.basicConfig(level=logging.DEBUG if verbose else logging.ERROR, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    from .commands import (
        bench,
        build_engine,
        export,
        inspect,
        predict,
        pretrain,
        train,
        validate,
    )
    from .commands import eval as eval_cmd

    app.command("pretrain")(pretrain.pretrain)
    app.command("eval")(eval_cmd.eval_command)
    app.command("train")(train.train)
    app.command("export")(export.export)
    app.command("inspect")(inspect.inspect)
    app.command("validate")(validate.validate)
    app.command("build-engine")(build_engine.build_engine)
    app.command("bench")(bench.bench)
    app.command("predict")(predict.predict)


_register()


def _on_signal(signum, frame) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second one ends the process at once (e.g. stuck in native code)
    note_signal(signum)
    raise Interrupted(signum)


def _one_line(exc: ClickException) -> str:
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return message
    usage = " ".join(ctx.get_usage().split()).removeprefix("Usage: ")
    return f"{message} (usage: {usage}; more: {ctx.command_path} --help)"


def _interrupted(signum: int) -> NoReturn:
    print(f"interrupted by {signal.Signals(signum).name}: {_common.interrupt_note()}", file=sys.stderr)
    sys.exit(128 + signum)


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # under torchrun the launcher stops its ranks with SIGTERM: keep its default there (a rank may
    # be blocked in a collective, where a Python handler would never run)
    for sig in (signal.SIGINT,) if "LOCAL_RANK" in os.environ else (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    try:
        rc = app(standalone_mode=False)
    except ClickException as exc:
        # usage errors (exit 2) and other click errors: one line with the usage, as every other error
        # (`p4q-export` alone has printed its help already and has nothing to add)
        if exc.format_message().strip():
            print(f"error: {_one_line(exc)}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except CheckFailed as exc:
        print(f"check failed: {exc}", file=sys.stderr)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except (Interrupted, KeyboardInterrupt) as exc:
        _interrupted(exc.signum if isinstance(exc, Interrupted) else signal.SIGINT)
    except Exception as exc:
        # native code (a C++ writer) may turn the handler's raise into its own error: still an interrupt
        if pending_signal() is not None:
            _interrupted(pending_signal())
        if not isinstance(exc, OSError):
            raise
        # a read-only or full disk, a vanished folder: one line, nothing half-written (staging dirs are removed)
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        sys.exit(2)
    # typer returns (not raises) the exit code of a typer.Exit in non-standalone mode
    if isinstance(rc, int) and rc:
        sys.exit(rc)


if __name__ == "__main__":
    main()
