"""The Ray engine of re-inspection: chunks as retried Ray tasks, results stored by the driver.

Without an address, a local Ray instance is started whose processes listen on 127.0.0.1 only
(Ray otherwise binds the machine's network address) and without its dashboard; with one, the
driver joins that cluster. The bundle is put once into Ray's object store; the images are read
by the workers from the archive path, which must be the same on every node (a shared mount or
an object-store fuse; see the README's fleet section).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from flawscope.reinspect.worker import BundlePayload, ChunkResult, score_chunk

logger = logging.getLogger(__name__)
#: Ray retries a task this many times when its worker process or node dies.
MAX_RETRIES = 3
#: Seconds without any finished task after which the driver checks that the cluster still has a
#: live node with CPUs, and gives up if it does not.
STALL_CHECK_S = 20.0
_LOCAL_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_AUTH_MODE = "RAY_AUTH_MODE"


def _loopback(address: str | None) -> bool:
    if address is None:
        return True
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _import_ray(address: str | None) -> Any:
    """Import Ray; for a cluster on this machine, make its nodes use 127.0.0.1 as their address.

    Ray reads the setting when it is imported: with it, a local node's servers listen on the
    loopback address instead of the machine's network address. It is left alone for a remote
    cluster, and when Ray was already imported by the caller.
    """
    if _loopback(address) and "ray" not in sys.modules:
        os.environ.setdefault(_LOCAL_ENV, "0")
    try:
        import ray
    except ImportError:
        from flawscope.errors import InputError

        raise InputError("engine", "the Ray engine needs Ray: pip install 'flawscope[scale]'") from None
    return ray


def _reachable(address: str, timeout_s: float = 5.0) -> str:
    """``""`` when something accepts connections at ``HOST:PORT``, else why not."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return f"{address!r} is not HOST:PORT"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return ""
    except OSError as exc:
        return exc.strerror or str(exc)


def _connect(ray: Any, address: str | None, workers: int | None) -> bool:
    """Connect to (or start) Ray; True when this call started it and must shut it down."""
    from flawscope.reinspect.run import ReinspectError

    if ray.is_initialized():
        return False
    if address:
        # Ray's own client retries an absent cluster for minutes; a refused connection is final.
        problem = _reachable(address)
        if problem:
            raise ReinspectError(f"cannot reach the Ray cluster at {address}: {problem}")
        _token_mode()
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(
                num_cpus=workers or os.cpu_count() or 1,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
                _node_ip_address="127.0.0.1",
            )
    except (ConnectionError, RuntimeError, TimeoutError, ValueError) as exc:
        where = address or "a local Ray instance"
        hint = (
            "; if the cluster uses token authentication, give its token (RAY_AUTH_TOKEN or "
            "RAY_AUTH_TOKEN_PATH)"
            if address
            else ""
        )
        raise ReinspectError(
            f"cannot reach the Ray cluster at {where}: {str(exc).splitlines()[0]}{hint}"
        ) from None
    return True


def _token_mode() -> None:
    """Use Ray's token authentication when this machine has a token, as a local ``ray.init`` does.

    A cluster started with ``ray start`` requires the token it saved in ``~/.ray/auth_token``, but
    a driver joining it by address sends the token only in ``RAY_AUTH_MODE=token``, which Ray reads
    when it is imported; Ray's own switch (used for local clusters) also refreshes its settings.
    An explicit ``RAY_AUTH_MODE`` is left alone.
    """
    if os.environ.get(_AUTH_MODE) is not None:
        return
    have = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not (have or (Path.home() / ".ray" / "auth_token").is_file()):
        return
    try:
        from ray._private.authentication.authentication_token_setup import _enable_token_auth
    except ImportError:  # another Ray version: the variable alone works if set before Ray is imported
        os.environ[_AUTH_MODE] = "token"
    else:
        _enable_token_auth()


def _cluster_alive(ray: Any, gcs: str) -> bool:
    """Whether the cluster's control service answers and a live node has CPUs."""
    if gcs and _reachable(gcs, 2.0):
        return False
    try:
        return any(n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0 for n in ray.nodes())
    except Exception:
        return False


def run_on_ray(
    payload: BundlePayload,
    root: str,
    chunks: Iterator[list[str]],
    stored: Callable[[Sequence[ChunkResult]], None],
    *,
    address: str | None = None,
    workers: int | None = None,
) -> int:
    """Score every chunk on Ray, calling ``stored`` with each chunk's results as it completes.

    Returns:
        The number of CPU slots of the cluster.

    Raises:
        ReinspectError: the cluster is unreachable, died mid-job, or a chunk failed after every
            retry (the results stored so far stay).
    """
    from flawscope.reinspect.run import ReinspectError

    ray = _import_ray(address)
    started = _connect(ray, address, workers)
    done_chunks = 0
    try:
        slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        gcs = str(getattr(ray.get_runtime_context(), "gcs_address", "") or "")
        task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(score_chunk)
        bundle = ray.put(payload)
        in_flight: dict[Any, int] = {}
        limit = 2 * slots + 2
        source = iter(chunks)
        exhausted = False
        last_progress = time.monotonic()
        while True:
            while not exhausted and len(in_flight) < limit:
                chunk = next(source, None)
                if chunk is None:
                    exhausted = True
                    break
                in_flight[task.remote(bundle, root, chunk, 1)] = len(chunk)
            if not in_flight:
                break
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=5.0)
            if not ready:
                if time.monotonic() - last_progress > STALL_CHECK_S and not _cluster_alive(ray, gcs):
                    raise ReinspectError(
                        f"the Ray cluster {address or '(local)'} has no live node with CPUs left; "
                        f"{done_chunks} chunks were stored; run the same command again to finish"
                    )
                continue
            for ref in ready:
                in_flight.pop(ref)
                stored(ray.get(ref))
                done_chunks += 1
                last_progress = time.monotonic()
        return slots
    except ReinspectError:
        raise
    except Exception as exc:
        if type(exc).__module__.startswith("ray"):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ReinspectError(
                f"the Ray job failed after {done_chunks} stored chunks ({type(exc).__name__}: {first}); "
                "the results stored so far stay: run the same command again to finish"
            ) from None
        raise
    finally:
        if started:
            try:
                ray.shutdown()
            except Exception:
                logger.exception("Ray shutdown failed")
