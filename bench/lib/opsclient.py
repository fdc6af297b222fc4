#!/usr/bin/env python3
"""Helper for the ops section of bench/run.sh (Python 3 stdlib only, reuses regclient.Client).

tag-many BASE REPO FILE --media-type TYPE --count N --threads T [--prefix P]
    PUT the bytes of FILE (a manifest or an index) as N tags P00000..P{N-1}, T keep-alive
    connections at once.  Prints {"ok", "failed", "first_error", "seconds", "rps"}.
"""
import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from regclient import Client, describe  # noqa: E402


def cmd_tag_many(a):
    with open(a.file, "rb") as f:
        body = f.read()
    n, threads = a.count, max(1, a.threads)
    lock = threading.Lock()
    res = {"ok": 0, "failed": 0, "first_error": None}

    def worker(idx):
        c = Client(a.base, timeout=60)
        ok = failed = 0
        for i in range(idx, n, threads):
            target = f"/v2/{a.repo}/manifests/{a.prefix}{i:05d}"
            try:
                st, _h, resp = c.request("PUT", target, body, {"Content-Type": a.media_type})
            except Exception as e:  # noqa: BLE001
                st, resp = -1, str(e).encode()
            if st == 201:
                ok += 1
            else:
                failed += 1
                with lock:
                    if res["first_error"] is None:
                        res["first_error"] = describe("PUT", target, st, resp)
                if failed > 50 and ok == 0:
                    break
        c.close()
        with lock:
            res["ok"] += ok
            res["failed"] += failed

    t0 = time.perf_counter()
    ths = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    secs = time.perf_counter() - t0
    res.update(seconds=round(secs, 3), rps=round(res["ok"] / secs, 1) if secs > 0 else 0)
    print(json.dumps(res))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("tag-many")
    s.add_argument("base"); s.add_argument("repo"); s.add_argument("file")
    s.add_argument("--media-type", required=True)
    s.add_argument("--count", type=int, default=10000)
    s.add_argument("--threads", type=int, default=16)
    s.add_argument("--prefix", default="t")
    s.set_defaults(fn=cmd_tag_many)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
