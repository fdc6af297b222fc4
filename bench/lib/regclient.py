#!/usr/bin/env python3
"""Tiny OCI Distribution client used by bench/run.sh (Python 3 stdlib only).

Every sub-command prints exactly one JSON object on stdout; diagnostics go to
stderr.  Bulk byte transfers are timed with curl in run.sh; this helper does
the fiddly small-request work: pushing the small test image, creating many
tags over keep-alive connections, timing tag listings (following pagination)
and the wrong-digest conformance check.
"""
import argparse
import hashlib
import http.client
import json
import os
import re
import socket
import statistics
import sys
import threading
import time
import urllib.parse

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class Client:
    """One keep-alive HTTP/1.1 connection to a registry base URL."""

    def __init__(self, base, timeout=120):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port or 80
        self.timeout = timeout
        self.conn = None

    def _connect(self):
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout,
                                               blocksize=1 << 20)

    def request(self, method, target, body=None, headers=None):
        """Returns (status, headers{lower: value}, body bytes). Retries once on a dropped keep-alive."""
        target = self.path_of(target)
        for attempt in (0, 1):
            if self.conn is None:
                self._connect()
            try:
                self.conn.request(method, target, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                data = resp.read()
                hdrs = {k.lower(): v for k, v in resp.getheaders()}
                if resp.getheader("connection", "").lower() == "close":
                    self.close()
                return resp.status, hdrs, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest):
                self.close()
                if attempt == 1:
                    raise

    def path_of(self, target):
        """Location headers may be absolute URLs or absolute paths; we want the path+query."""
        if target.startswith("http://") or target.startswith("https://"):
            u = urllib.parse.urlsplit(target)
            return u.path + ("?" + u.query if u.query else "")
        return target

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def add_query(target, key, value):
    sep = "&" if "?" in target else "?"
    return f"{target}{sep}{key}={urllib.parse.quote(value, safe=':')}"


def err_code(body):
    try:
        errs = json.loads(body).get("errors") or []
        return errs[0].get("code") if errs else None
    except Exception:
        return None


def describe(method, target, status, body):
    text = body[:300].decode("utf-8", "replace").replace("\n", " ")
    return f"{method} {target} -> {status} {text}"


def upload_blob(c, repo, data, problems):
    """Monolithic upload: single POST ?digest= with body; if the registry answers 202
    (single-POST not supported) the body is sent again with PUT <location>?digest=.
    Returns (digest, single_post_supported)."""
    dg = sha256_digest(data)
    hdr = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
    target = f"/v2/{repo}/blobs/uploads/?digest={dg}"
    st, h, body = c.request("POST", target, data, hdr)
    if st == 201:
        return dg, True
    if st != 202 or "location" not in h:
        problems.append(describe("POST", target, st, body))
        raise RuntimeError(problems[-1])
    put_target = add_query(c.path_of(h["location"]), "digest", dg)
    st, h, body = c.request("PUT", put_target, data, hdr)
    if st != 201:
        problems.append(describe("PUT", put_target, st, body))
        raise RuntimeError(problems[-1])
    return dg, False


def cmd_free_port(_a):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    print(json.dumps({"port": port}))


def cmd_push_image(a):
    problems = []
    out = {"ok": False}
    c = Client(a.base)
    try:
        layer = os.urandom(4096)
        config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]},
            "config": {"Cmd": ["/bin/true"]},
        }, separators=(",", ":")).encode()
        cfg_dg, single = upload_blob(c, a.repo, config, problems)
        layer_dg, _ = upload_blob(c, a.repo, layer, problems)
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": cfg_dg, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": layer_dg, "size": len(layer)}],
        }, indent=2).encode()
        man_dg = sha256_digest(manifest)
        target = f"/v2/{a.repo}/manifests/{a.tag}"
        st, h, body = c.request("PUT", target, manifest, {"Content-Type": OCI_MANIFEST})
        if st != 201:
            problems.append(describe("PUT", target, st, body))
            raise RuntimeError(problems[-1])
        if h.get("docker-content-digest") not in (None, man_dg):
            problems.append(f"PUT {target}: Docker-Content-Digest {h.get('docker-content-digest')} != {man_dg}")
        # read it back by tag, with the Accept header the benchmark uses
        st, h, body = c.request("GET", target, None, {"Accept": OCI_MANIFEST})
        if st != 200 or body != manifest:
            problems.append(describe("GET", target, st, body) + " (expected the pushed manifest bytes)")
        elif h.get("content-type") != OCI_MANIFEST:
            problems.append(f"GET {target}: Content-Type {h.get('content-type')!r}, expected {OCI_MANIFEST}")
        st, h, body = c.request("GET", f"/v2/{a.repo}/blobs/{layer_dg}")
        if st != 200 or body != layer:
            problems.append(describe("GET", f"/v2/{a.repo}/blobs/{layer_dg}", st, body[:0])
                            + f" ({len(body)} bytes, expected the 4096-byte layer)")
        os.makedirs(a.outdir, exist_ok=True)
        with open(os.path.join(a.outdir, "manifest.json"), "wb") as f:
            f.write(manifest)
        out.update(ok=True, manifest_digest=man_dg, layer_digest=layer_dg,
                   config_digest=cfg_dg, single_post=single)
    except Exception as e:  # noqa: BLE001 - report anything as a problem
        if not problems:
            problems.append(f"{type(e).__name__}: {e}")
    out["problems"] = problems
    print(json.dumps(out))


def cmd_put_tags(a):
    with open(a.manifest, "rb") as f:
        manifest = f.read()
    n, threads = a.count, max(1, a.threads)
    lock = threading.Lock()
    res = {"ok": 0, "failed": 0, "first_error": None}

    def worker(idx):
        c = Client(a.base, timeout=30)
        ok = failed = 0
        for i in range(idx, n, threads):
            target = f"/v2/{a.repo}/manifests/{a.prefix}{i:05d}"
            try:
                st, _h, body = c.request("PUT", target, manifest, {"Content-Type": OCI_MANIFEST})
            except Exception as e:  # noqa: BLE001
                st, body = -1, str(e).encode()
            if st == 201:
                ok += 1
            else:
                failed += 1
                with lock:
                    if res["first_error"] is None:
                        res["first_error"] = describe("PUT", target, st, body)
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


LINK_RE = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


def list_all_tags(c, repo):
    """Returns (status, tags, pages, problem). Follows Link: rel=next pagination."""
    target = f"/v2/{repo}/tags/list"
    tags, pages = [], 0
    while target:
        st, h, body = c.request("GET", target)
        pages += 1
        if st != 200:
            return st, tags, pages, describe("GET", target, st, body)
        try:
            tags.extend(json.loads(body).get("tags") or [])
        except ValueError:
            return st, tags, pages, describe("GET", target, st, body) + " (invalid JSON)"
        m = LINK_RE.search(h.get("link", ""))
        target = c.path_of(m.group(1)) if m else None
        if pages > 100000:
            return st, tags, pages, "pagination did not terminate"
    return 200, tags, pages, None


def cmd_tags_list(a):
    c = Client(a.base, timeout=60)
    times, out = [], {"ok": False}
    st, tags, pages, problem = list_all_tags(c, a.repo)  # warm-up + correctness check
    out.update(status=st, tags=len(tags), pages=pages, unique=len(set(tags)),
               sorted=tags == sorted(tags), problem=problem)
    if problem is None:
        for _ in range(a.iterations):
            t0 = time.perf_counter()
            st, tags2, _p, problem = list_all_tags(c, a.repo)
            times.append(time.perf_counter() - t0)
            if problem:
                out["problem"] = problem
                break
        if times and not out["problem"]:
            times.sort()
            out.update(ok=True, median_ms=round(statistics.median(times) * 1e3, 3),
                       p90_ms=round(times[int(0.9 * (len(times) - 1))] * 1e3, 3),
                       min_ms=round(times[0] * 1e3, 3), iterations=len(times))
    print(json.dumps(out))


def cmd_probe_single_post(a):
    """Does the registry accept a monolithic single POST ?digest= with the body?"""
    c = Client(a.base)
    data = os.urandom(1024)
    dg = sha256_digest(data)
    target = f"/v2/{a.repo}/blobs/uploads/?digest={dg}"
    st, h, body = c.request("POST", target, data, {"Content-Type": "application/octet-stream"})
    out = {"status": st, "supported": st == 201, "request": describe("POST", target, st, body)}
    if st == 201:
        st2, _h, body2 = c.request("GET", f"/v2/{a.repo}/blobs/{dg}")
        if st2 != 200 or body2 != data:
            out["problem"] = describe("GET", f"/v2/{a.repo}/blobs/{dg}", st2, b"") + " after single-POST upload"
    print(json.dumps(out))


def cmd_wrong_digest(a):
    c = Client(a.base)
    data = os.urandom(65536)
    real = sha256_digest(data)
    wrong = sha256_digest(data + b"x")
    hdr = {"Content-Type": "application/octet-stream"}
    target = f"/v2/{a.repo}/blobs/uploads/?digest={wrong}"
    st, h, body = c.request("POST", target, data, hdr)
    flow = "single POST"
    req = describe("POST", target, st, body)
    if st == 202 and "location" in h:
        # single-POST not supported: finish as POST + monolithic PUT with the wrong digest
        flow = "POST + PUT"
        target = add_query(c.path_of(h["location"]), "digest", wrong)
        st, h, body = c.request("PUT", target, data, hdr)
        req = describe("PUT", target, st, body)
    code = err_code(body)
    problems = []
    if st != 400 or code != "DIGEST_INVALID":
        problems.append(f"expected 400 DIGEST_INVALID, got {st} {code}: {req}")
    for dg in (wrong, real):
        st2, _h, b2 = c.request("HEAD", f"/v2/{a.repo}/blobs/{dg}")
        if st2 != 404:
            problems.append(f"HEAD /v2/{a.repo}/blobs/{dg} -> {st2} after rejected upload (expected 404)")
    print(json.dumps({"result": "FAIL" if problems else "PASS", "flow": flow, "status": st,
                      "code": code, "problems": problems}))


def main():
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("free-port").set_defaults(fn=cmd_free_port)
    s = sub.add_parser("push-image")
    s.add_argument("base"); s.add_argument("repo"); s.add_argument("tag"); s.add_argument("outdir")
    s.set_defaults(fn=cmd_push_image)
    s = sub.add_parser("put-tags")
    s.add_argument("base"); s.add_argument("repo"); s.add_argument("manifest")
    s.add_argument("--count", type=int, default=10000)
    s.add_argument("--threads", type=int, default=4)
    s.add_argument("--prefix", default="t")
    s.set_defaults(fn=cmd_put_tags)
    s = sub.add_parser("tags-list")
    s.add_argument("base"); s.add_argument("repo")
    s.add_argument("--iterations", type=int, default=20)
    s.set_defaults(fn=cmd_tags_list)
    s = sub.add_parser("probe-single-post")
    s.add_argument("base"); s.add_argument("repo")
    s.set_defaults(fn=cmd_probe_single_post)
    s = sub.add_parser("wrong-digest")
    s.add_argument("base"); s.add_argument("repo")
    s.set_defaults(fn=cmd_wrong_digest)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
