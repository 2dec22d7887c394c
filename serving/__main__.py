"""Command line for the Triton server: start, status, stop and reload.

Run it from the repository root with the project's venv, e.g. `.venv/bin/python -m serving start`:

    python -m serving start --repository model_repository [--grpc-port 8001 --http-port 8000 --metrics-port 8002]
                            [--host 127.0.0.1] [--foreground] [--log FILE] [--tritonserver PATH]
                            [--allow-failed-models] [--ssl-cert PEM --ssl-key PEM [--ssl-root-cert PEM]]
    python -m serving status [--clean]
    python -m serving reload NAME
    python -m serving stop

Model control (load, unload, the repository index), logging and trace are locked: `start` keeps a
random admin key in <state-dir>/admin.key (mode 0600), and `reload` and `status` send it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

from . import state as state_store
from .errors import ServingError
from .server import TritonServer, start_server
from .leftovers import clean_client_regions, kill_stub_leftovers
from .settings import MODES, ServerSettings, default_state_dir
from .stats import format_status


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, default=None,
                        help="where the running server is recorded (default: $PIXELPORT_STATE_DIR or "
                             f"{default_state_dir()})")
    common.add_argument("-v", "--verbose", action="store_true", help="log what the launcher does")
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)

    start = verbs.add_parser("start", parents=[common], help="start Triton; returns when every model is ready")
    start.add_argument("--repository", type=Path, default=Path("model_repository"), help="Triton model repository")
    start.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default: loopback only; 0.0.0.0 for every interface, with a warning)")
    start.add_argument("--http-port", type=int, default=8000, help="HTTP/REST port (default: 8000)")
    start.add_argument("--grpc-port", type=int, default=8001, help="gRPC port, what clients use (default: 8001)")
    start.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port (default: 8002)")
    start.add_argument("--log", type=Path, default=None, help="server log file (default: <state-dir>/server.log)")
    start.add_argument("--tritonserver", type=Path, default=None, help="a full Triton binary (external mode)")
    start.add_argument("--mode", choices=MODES, default="auto",
                       help="auto: a full Triton if one is found, else embedded (PyPI binary, python backend)")
    start.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C or SIGTERM stops the server")
    start.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the server and its models")
    start.add_argument("--allow-failed-models", action="store_true",
                       help="keep serving the models that load when others fail (status says why they failed)")
    start.add_argument("--grpc-request-pool", type=int, default=0,
                       help="gRPC request objects Triton keeps for reuse; each keeps its largest request's bytes, "
                            "so 0 (the default) keeps no refused oversized request in memory (Triton's own: 8)")
    start.add_argument("--ssl-cert", type=Path, default=None, help="PEM certificate: serve gRPC over TLS")
    start.add_argument("--ssl-key", type=Path, default=None, help="PEM private key of --ssl-cert")
    start.add_argument("--ssl-root-cert", type=Path, default=None,
                       help="PEM CA bundle that signed --ssl-cert, for clients to verify it (default: the "
                            "certificate itself, right for a self-signed one)")

    status = verbs.add_parser("status", parents=[common], help="per-model state, version, counts, queue/compute time")
    status.add_argument("--clean", action="store_true",
                        help="first unregister shared-memory regions of pixelport clients that died, and unlink them")
    verbs.add_parser("stop", parents=[common], help="SIGTERM the server, SIGKILL after a grace period, clean up")
    reload = verbs.add_parser("reload", parents=[common], help="load a newly published version without a restart")
    reload.add_argument("name", help="model name")
    return parser


def cmd_start(args: argparse.Namespace, state_dir: Path) -> int:
    settings = ServerSettings(
        repository=args.repository, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
        metrics_port=args.metrics_port, log_file=args.log, tritonserver=args.tritonserver, mode=args.mode,
        state_dir=state_dir, startup_timeout_s=args.timeout, allow_failed_models=args.allow_failed_models,
        die_with_parent=args.foreground, ssl_cert=args.ssl_cert, ssl_key=args.ssl_key,
        ssl_root_cert=args.ssl_root_cert, grpc_request_pool=args.grpc_request_pool,
    )
    server = start_server(settings)
    print(_status_text(server))
    if not args.foreground:
        print(f"started: stop it with `python -m serving stop`{_state_flag(args)}")
        return 0
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    while not done.wait(1.0):
        if not server.is_alive():
            print(f"error: Triton exited unexpectedly\n{server.log_tail()}", file=sys.stderr)
            server.stop()
            return 1
    server.stop()
    print("stopped")
    return 0


def _status_text(server: TritonServer) -> str:
    return format_status(server.record, server.status())


def _state_flag(args: argparse.Namespace) -> str:
    return f" --state-dir {args.state_dir}" if args.state_dir else ""


def cmd_status(state_dir: Path, clean: bool = False) -> int:
    server = TritonServer.attach(state_dir)
    if clean:
        with server.client() as client:
            cleaned = clean_client_regions(client)
        listed = f": {', '.join(cleaned)}" if cleaned else ""
        print(f"cleaned {len(cleaned)} shared-memory region(s) of dead clients{listed}")
    print(_status_text(server))
    return 0


def cmd_stop(state_dir: Path) -> int:
    record = state_store.load(state_dir)
    if record is None:
        killed = kill_stub_leftovers(state_dir)  # stubs of a server whose record is gone
        print(f"no pixelport Triton recorded in {state_dir}: nothing to stop"
              + (f" (killed {len(killed)} leftover python-backend stub(s))" if killed else ""))
        return 0
    server = TritonServer(record, state_dir)
    was_running = server.is_alive()
    server.stop()
    if was_running:
        print(f"stopped Triton (pid {record.pid})")
    else:
        print(f"Triton (pid {record.pid}) was not running; removed its state, stub processes and shared-memory "
              "leftovers")
    return 0


def cmd_reload(name: str, state_dir: Path) -> int:
    versions = TritonServer.attach(state_dir).reload(name)
    print(f"reloaded {name}: serving version {', '.join(versions) or '(none ready)'}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    state_dir = args.state_dir or default_state_dir()
    try:
        if args.verb == "start":
            return cmd_start(args, state_dir)
        if args.verb == "status":
            return cmd_status(state_dir, args.clean)
        if args.verb == "stop":
            return cmd_stop(state_dir)
        return cmd_reload(args.name, state_dir)
    except (ServingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
