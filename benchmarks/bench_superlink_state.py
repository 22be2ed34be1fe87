"""The SuperLink's SQLite state (``flower-superlink --database FILE``) under concurrent replies.

With ``--database`` the SuperLink keeps its object store (every message's arrays, split into
objects) in the same SQLite file as its state. Flower 1.42's ``SqlObjectStore.preregister``
registers a message's whole object tree in one write transaction, one SQL statement after
another from Python, and its connections wait at most 5 s for the write lock (``PRAGMA
busy_timeout = 5000``, fixed in Flower). Replies that arrive together (every sampled site
answers a round at about the same time) therefore queue for the lock; one that waits longer
than 5 s fails with ``sqlite3.OperationalError: database is locked`` (HTTP 500 to the
SuperNode; the reply is lost).

This measures, on this machine, with Flower's own ``SqlObjectStore`` on a fresh file:

1. one reply alone: CPU and wall seconds of ``preregister`` (the write lock held) and of the
   uploads (``put`` per object);
2. ``--writers`` replies at once, one thread each (the SuperLink serves requests from a thread
   pool): how many failed with ``database is locked``.

The reply is an ArrayRecord shaped like a stage reply of the smoke experiment (532 arrays,
1.5 MiB: LSNet student + teacher state); ``--arrays`` / ``--mib`` change it.

    python benchmarks/bench_superlink_state.py                 # 532 arrays, 1.5 MiB, 2-6 writers
    python benchmarks/bench_superlink_state.py --writers 3 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree
from flwr.supercore.object_store.sql_object_store import SqlObjectStore


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arrays", type=int, default=532, help="arrays per reply (default 532, a smoke stage reply)")
    parser.add_argument("--mib", type=float, default=1.5, help="reply size in MiB (default 1.5)")
    parser.add_argument("--writers", type=int, nargs="+", default=[2, 3, 4, 6], help="concurrent replies (default 2 3 4 6)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds per writer count (default 2)")
    return parser.parse_args()


def make_reply(n_arrays: int, mib: float, seed: int) -> RecordDict:
    """A reply of ``n_arrays`` float32 arrays: most tiny (norm layers, biases), a few holding the bulk."""
    rng = np.random.default_rng(seed)
    n_large = max(1, n_arrays // 16)
    large = int(mib * 2**20 / 4 / n_large)
    sizes = [large] * n_large + [16] * (n_arrays - n_large)
    return RecordDict({"arrays": ArrayRecord(numpy_ndarrays=[rng.standard_normal(n).astype(np.float32) for n in sizes],
                                             keep_input=True)})


def store_reply(store: SqlObjectStore, reply: RecordDict, run_id: int) -> dict[str, float]:
    """What the SuperLink does with a pushed reply: preregister its object tree, then put every object."""
    cpu, wall = time.thread_time(), time.perf_counter()
    store.preregister(run_id, get_object_tree(reply))
    timing = {"preregister_cpu_s": time.thread_time() - cpu, "preregister_s": time.perf_counter() - wall}
    for object_id, obj in get_all_nested_objects(reply).items():
        store.put(object_id, obj.deflate())
    timing.update(total_cpu_s=time.thread_time() - cpu, total_s=time.perf_counter() - wall)
    return timing


def concurrent_replies(store: SqlObjectStore, replies: list[RecordDict], run_id: int) -> tuple[float, list[str]]:
    """Store ``replies`` at once (a thread each); wall seconds and the errors."""
    errors: list[str] = []

    def one(reply: RecordDict) -> None:
        try:
            store_reply(store, reply, run_id)
        except Exception as exc:  # noqa: BLE001 - the measurement is which ones fail, and how
            errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}")

    threads = [threading.Thread(target=one, args=(reply,)) for reply in replies]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, errors


def main() -> None:
    args = parse_args()
    print(f"# SuperLink SQLite state: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        store = SqlObjectStore(str(Path(tmp) / "superlink.db"))
        store.initialize()
        reply = make_reply(args.arrays, args.mib, seed=0)
        print(f"reply: {args.arrays} arrays, {args.mib} MiB, {len(get_all_nested_objects(reply))} objects")
        for i in range(args.repeat):
            t = store_reply(store, make_reply(args.arrays, args.mib, seed=1 + i), run_id=1)
            print(f"alone: preregister (write lock held) {t['preregister_s']:.2f} s wall, {t['preregister_cpu_s']:.2f} s CPU; "
                  f"with uploads {t['total_s']:.2f} s wall, {t['total_cpu_s']:.2f} s CPU")
        seed = 100
        for writers in args.writers:
            for _ in range(args.repeat):
                replies = [make_reply(args.arrays, args.mib, seed=seed + k) for k in range(writers)]
                seed += writers
                wall, errors = concurrent_replies(store, replies, run_id=seed)
                print(f"{writers} at once: {wall:.1f} s, {len(errors)} of {writers} failed"
                      + (f" ({errors[0]})" if errors else ""))


if __name__ == "__main__":
    main()
