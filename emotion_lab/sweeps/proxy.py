"""The study served to trials that cannot open its storage themselves (other machines, no shared
filesystem): Optuna's gRPC storage proxy, run by the sweep for as long as it runs."""

from __future__ import annotations

import errno
import logging
import socket
import threading
import warnings

import optuna

from emotion_lab.errors import first_line
from emotion_lab.sweeps.study import GRPC, SweepSetupError

log = logging.getLogger(__name__)

# How long the sweep waits for its own proxy to answer before giving up.
READY_TIMEOUT_S = 20.0


def _bind_probe(host: str, port: int) -> int:
    """The port (a free one for 0) after binding it once without SO_REUSEPORT: gRPC's server sets that
    option, so it would share a port another sweep's proxy listens on, and trials would reach either study."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed proxy's TIME_WAIT is no listener
        probe.bind((host, port))
        return probe.getsockname()[1]


def serve_study(storage: optuna.storages.BaseStorage, host: str, port: int) -> str:
    """Serve `storage` on host:port (0: a free port) from a daemon thread; returns the `grpc://host:port`
    spec trials open. The server lives until the sweep's process exits."""
    try:
        port = _bind_probe(host, port)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise SweepSetupError(
                f"hydra.sweeper.proxy.port={port}: something on {host} listens there already (another sweep's "
                "proxy?); give another port, or 0 for any free one"
            ) from None
        raise SweepSetupError(
            f"hydra.sweeper.proxy.host={host}: cannot listen there ({err.strerror}); give an address of this "
            "machine that the trials' machines reach"
        ) from None
    address = f"[{host}]" if ":" in host else host  # gRPC's form for an IPv6 address
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        server = threading.Thread(
            target=optuna.storages.run_grpc_proxy_server,
            args=(storage,),
            kwargs={"host": address, "port": port},
            name="optuna-grpc-proxy",
            daemon=True,
        )
        server.start()
        client = optuna.storages.GrpcStorageProxy(host=address, port=port)
    try:
        client.wait_server_ready(timeout=READY_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001 - grpc's own timeout error: one line either way
        raise SweepSetupError(
            f"hydra.sweeper.proxy: the study's gRPC proxy on {host}:{port} did not answer within "
            f"{READY_TIMEOUT_S:.0f} s ({first_line(err) or type(err).__name__}); is the port taken?"
        ) from None
    finally:
        client.close()
    spec = f"{GRPC}{address}:{port}"
    log.info("serving the study to trials on %s (Optuna's gRPC storage proxy)", spec)
    return spec
