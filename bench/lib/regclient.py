#!/usr/bin/env python3
"""Tiny OCI Distribution client used by bench/run.sh (Python 3 stdlib only).

Every sub-command prints exactly one JSON object on stdout; diagnostics go to
stderr.  Bulk byte transfers are timed with curl in run.sh; this helper does
the fiddly small-request work: pushing the small test image, creating many
tags over keep-alive connections, timing tag listings (following pagination)
and the wrong-digest conformance check; and for the mirror/sync scenarios,
pushing multi-platform images of random layers (push-multi) and pulling one
platform the way containerd does (pull: index by tag, manifest by digest, then
config + layers, up to 4 at once, every byte read and discarded; or every
platform with --platform all); and throttle,
a bandwidth-limited forwarding TCP proxy that stands in for a remote upstream.
"""
import argparse
import base64
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

    def __init__(self, base, timeout=120, user=None):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port or 80
        self.timeout = timeout
        self.conn = None
        # user = "NAME:PASSWORD": Basic credentials sent with every request
        self.auth = "Basic " + base64.b64encode(user.encode()).decode() if user else None

    def _connect(self):
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout,
                                               blocksize=1 << 20)

    def request(self, method, target, body=None, headers=None):
        """Returns (status, headers{lower: value}, body bytes). Retries once on a dropped keep-alive."""
        target = self.path_of(target)
        if self.auth:
            headers = dict(headers or {}, Authorization=self.auth)
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


def upload_blob(c, repo, data, problems, single=True):
    """Monolithic upload: single POST ?digest= with body; if the registry answers 202
    (single-POST not supported) the body is sent again with PUT <location>?digest=.
    With single=False: POST without a body, then PUT (a registry without single-POST
    may answer 202 and close before reading a large body).
    Returns (digest, single_post_supported)."""
    dg = sha256_digest(data)
    hdr = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
    target = f"/v2/{repo}/blobs/uploads/?digest={dg}"
    if single:
        st, h, body = c.request("POST", target, data, hdr)
    else:
        target = f"/v2/{repo}/blobs/uploads/"
        st, h, body = c.request("POST", target, b"", {"Content-Length": "0"})
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
    c = Client(a.base, user=a.user)
    try:
        if a.seed is None:
            layer = os.urandom(4096)
        else:   # the same image (same digests) every time: to compare two registries on identical content
            import random
            layer = random.Random(a.seed).randbytes(4096)
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


OCI_INDEX = "application/vnd.oci.image.index.v1+json"
PULL_ACCEPT = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    OCI_MANIFEST, OCI_INDEX, "*/*"])


def parse_bytes(text):
    """'32M' / '256K' / '1048576' -> int."""
    text = text.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(float(text[:-1] if mult > 1 else text) * mult)


def parse_range(text, conv=int):
    lo, _, hi = text.partition("-")
    lo = conv(lo)
    return lo, (conv(hi) if hi else lo)


def cmd_push_multi(a):
    """Push one multi-platform OCI index (random layers) per --repo, all tagged a.tag.
    Writes a JSON description (digests and sizes) to a.out and prints a summary."""
    import random
    rnd = random.Random(a.seed)
    platforms = [p.strip() for p in a.platforms.split(",") if p.strip()]
    nlay = parse_range(a.layers)
    lbytes = parse_range(a.layer_bytes, parse_bytes)
    problems, desc, sizes = [], {"repos": {}, "blob_sizes": {}}, {}
    c = Client(a.base, timeout=300)
    try:
        # does the registry take a single POST with the body? (probe with a tiny blob, unless told)
        if a.single_post == "probe":
            _dg, single = upload_blob(c, a.repo[0], os.urandom(64), problems)
        else:
            single = a.single_post == "yes"
        for repo in a.repo:
            entries, rdesc = [], {"platforms": {}}
            for plat in platforms:
                os_, arch = plat.split("/")[:2]
                layers = []
                for _ in range(rnd.randint(*nlay)):
                    data = os.urandom(rnd.randint(*lbytes))
                    dg, _ = upload_blob(c, repo, data, problems, single)
                    layers.append({"mediaType": OCI_LAYER, "digest": dg, "size": len(data)})
                    sizes[dg] = len(data)
                    del data
                config = json.dumps({
                    "architecture": arch, "os": os_, "created": "2026-01-01T00:00:00Z",
                    "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]},
                    "config": {"Cmd": ["/bin/true"], "Labels": {"bench": f"{repo} {plat}"}},
                }, separators=(",", ":")).encode()
                cfg_dg, _ = upload_blob(c, repo, config, problems, single)
                sizes[cfg_dg] = len(config)
                manifest = json.dumps({
                    "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": cfg_dg, "size": len(config)},
                    "layers": layers,
                }, indent=2).encode()
                man_dg = sha256_digest(manifest)
                target = f"/v2/{repo}/manifests/{man_dg}"
                st, _h, body = c.request("PUT", target, manifest, {"Content-Type": OCI_MANIFEST})
                if st != 201:
                    problems.append(describe("PUT", target, st, body))
                    raise RuntimeError(problems[-1])
                entries.append({"mediaType": OCI_MANIFEST, "digest": man_dg, "size": len(manifest),
                                "platform": {"architecture": arch, "os": os_}})
                rdesc["platforms"][plat] = {
                    "manifest_digest": man_dg, "manifest_size": len(manifest),
                    "config_digest": cfg_dg,
                    "blobs": [cfg_dg] + [l["digest"] for l in layers],
                    "blob_bytes": len(config) + sum(l["size"] for l in layers)}
            index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries},
                               indent=2).encode()
            idx_dg = sha256_digest(index)
            target = f"/v2/{repo}/manifests/{a.tag}"
            st, _h, body = c.request("PUT", target, index, {"Content-Type": OCI_INDEX})
            if st != 201:
                problems.append(describe("PUT", target, st, body))
                raise RuntimeError(problems[-1])
            rdesc.update(index_digest=idx_dg, tag=a.tag,
                         blob_bytes=sum(p["blob_bytes"] for p in rdesc["platforms"].values()))
            desc["repos"][repo] = rdesc
        desc["blob_sizes"] = sizes
        desc["total_blob_bytes"] = sum(sizes.values())
        with open(a.out, "w") as f:
            json.dump(desc, f)
        print(json.dumps({"ok": True, "repos": len(desc["repos"]), "blobs": len(sizes),
                          "total_blob_bytes": desc["total_blob_bytes"], "single_post": single,
                          "problems": problems}))
    except Exception as e:  # noqa: BLE001
        if not problems:
            problems.append(f"{type(e).__name__}: {e}")
        print(json.dumps({"ok": False, "problems": problems}))


class Fetcher:
    """Per-thread keep-alive connection that streams a body into a reusable buffer."""

    def __init__(self, base):
        self.c = Client(base, timeout=600)
        self.buf = bytearray(1 << 20)

    def get(self, target, headers, want_body=False, hasher=None):
        """Returns (status, headers, nbytes, body-or-None). Body is kept only if want_body."""
        c = self.c
        for attempt in (0, 1):
            if c.conn is None:
                c._connect()
            try:
                c.conn.request("GET", target, headers=headers)
                resp = c.conn.getresponse()
                hdrs = {k.lower(): v for k, v in resp.getheaders()}
                if want_body or resp.status != 200:
                    body = resp.read()
                    n = len(body)
                    if hasher is not None:
                        hasher.update(body)
                else:
                    body, n, mv = None, 0, memoryview(self.buf)
                    while True:
                        k = resp.readinto(mv)
                        if not k:
                            break
                        if hasher is not None:
                            hasher.update(mv[:k])
                        n += k
                if hdrs.get("connection", "").lower() == "close":
                    c.close()
                return resp.status, hdrs, n, body
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest):
                c.close()
                if attempt == 1:
                    raise

    def close(self):
        self.c.close()


def pull_once(a, problems, lock):
    """What containerd does for one platform: index by tag, manifest by digest, then the
    config and all layers, up to a.parallel at once, reading every byte.  With --platform all:
    every manifest of the index, then every distinct config and layer (a whole-image copy).
    Returns bytes read."""
    def tgt(path):
        return add_query(path, "ns", a.ns) if a.ns else path

    def fail(msg):
        with lock:
            problems.append(msg)
        raise RuntimeError(msg)

    f = Fetcher(a.base)
    try:
        t = tgt(f"/v2/{a.repo}/manifests/{a.tag}")
        st, h, _n, body = f.get(t, {"Accept": PULL_ACCEPT}, want_body=True)
        if st != 200:
            fail(describe("GET", t, st, body))
        idx = json.loads(body)
        if "manifests" in idx:
            if a.platform == "all":   # every platform of the index (a whole-image copy)
                m = list(idx["manifests"])
            else:
                want_os, want_arch = a.platform.split("/")[:2]
                m = [d for d in idx["manifests"] if d.get("platform", {}).get("os") == want_os
                     and d.get("platform", {}).get("architecture") == want_arch][:1]
            if not m:
                fail(f"GET {t}: no {a.platform} entry in the index")
            descs, seen = [], set()
            for entry in m:
                t = tgt(f"/v2/{a.repo}/manifests/{entry['digest']}")
                st, h, _n, body = f.get(t, {"Accept": PULL_ACCEPT}, want_body=True)
                if st != 200:
                    fail(describe("GET", t, st, body))
                if sha256_digest(body) != entry["digest"]:
                    fail(f"GET {t}: body hashes to {sha256_digest(body)}")
                man = json.loads(body)
                for d in [man["config"]] + list(man.get("layers", [])):
                    if d["digest"] not in seen:
                        seen.add(d["digest"])
                        descs.append(d)
        else:
            descs = [idx["config"]] + list(idx.get("layers", []))
    finally:
        f.close()
    todo = list(descs)
    total = [0]

    def worker():
        fw = Fetcher(a.base)
        try:
            while True:
                with lock:
                    if not todo:
                        return
                    d = todo.pop(0)
                t = tgt(f"/v2/{a.repo}/blobs/{d['digest']}")
                hasher = hashlib.sha256() if a.verify else None
                try:
                    st, _h, n, body = fw.get(t, {}, hasher=hasher)
                except Exception as e:  # noqa: BLE001
                    with lock:
                        problems.append(f"GET {t}: {type(e).__name__}: {e}")
                    continue
                with lock:
                    total[0] += n
                    if st != 200:
                        problems.append(describe("GET", t, st, body or b""))
                    elif n != d["size"]:
                        problems.append(f"GET {t} -> 200 with {n} bytes, expected {d['size']}")
                    elif hasher is not None and "sha256:" + hasher.hexdigest() != d["digest"]:
                        problems.append(f"GET {t} -> 200, body hashes to sha256:{hasher.hexdigest()}")
        finally:
            fw.close()

    ths = [threading.Thread(target=worker) for _ in range(max(1, a.parallel))]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    return total[0], sum(d["size"] for d in descs)


def cmd_pull(a):
    """a.clients concurrent pulls of one platform; prints wall seconds and bytes."""
    problems, lock = [], threading.Lock()
    per = []

    def one():
        t0 = time.perf_counter()
        try:
            got, want = pull_once(a, problems, lock)
            with lock:
                per.append((time.perf_counter() - t0, got, want))
        except Exception as e:  # noqa: BLE001
            with lock:
                if not problems or not str(e) in problems[-1]:
                    problems.append(f"{type(e).__name__}: {e}")

    t0 = time.perf_counter()
    ths = [threading.Thread(target=one) for _ in range(max(1, a.clients))]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    wall = time.perf_counter() - t0
    ok = len(per) == a.clients and not problems
    out = {"ok": ok, "seconds": round(wall, 4), "clients": a.clients, "completed": len(per),
           "bytes": sum(p[1] for p in per), "image_bytes": per[0][2] if per else None,
           "max_client_seconds": round(max((p[0] for p in per), default=0), 4),
           "problems": problems[:10], "problem_count": len(problems)}
    print(json.dumps(out))


ACCESS_RE = re.compile(r'method=(\w+) path="?([^" ]+)"? status=(\d+)')


def cmd_access_sum(a):
    """Sum what a wharf served from its access log (RUST_LOG=wharf::access=info), lines
    after --from-line: blob GETs answered 200 and their bytes (sizes from push-multi's
    description; wharf's access log has no byte counts), other blob GETs (e.g. 206)."""
    with open(a.desc) as f:
        sizes = json.load(f)["blob_sizes"]
    out = {"blob_get_200": 0, "blob_get_bytes": 0, "blob_get_other": {}, "blob_head": 0,
           "manifest_get": 0, "manifest_head": 0, "unknown_blobs": 0, "first_other": None}
    with open(a.log, errors="replace") as f:
        for i, line in enumerate(f):
            if i < a.from_line:
                continue
            m = ACCESS_RE.search(re.sub(r"\x1b\[[0-9;]*m", "", line))
            if not m:
                continue
            method, path, st = m.group(1), m.group(2), int(m.group(3))
            if "/blobs/sha256:" in path and "/uploads/" not in path:
                dg = path.rsplit("/", 1)[1]
                if method == "HEAD":
                    out["blob_head"] += 1
                elif st == 200:
                    out["blob_get_200"] += 1
                    if dg in sizes:
                        out["blob_get_bytes"] += sizes[dg]
                    else:
                        out["unknown_blobs"] += 1
                else:
                    out["blob_get_other"][str(st)] = out["blob_get_other"].get(str(st), 0) + 1
                    out["first_other"] = out["first_other"] or f"{method} {path} -> {st}"
            elif "/manifests/" in path:
                out["manifest_head" if method == "HEAD" else "manifest_get"] += 1
    print(json.dumps(out))


class RateLimiter:
    """Token bucket in GCRA form, shared by threads: reserve(n) books n bytes at
    `rate` bytes/s and returns how long to sleep before sending them.  Up to
    `burst` bytes may go out back-to-back after an idle period."""

    def __init__(self, rate, burst):
        self.rate, self.burst_s = float(rate), burst / float(rate)
        self.tat = 0.0  # theoretical arrival time of the next byte
        self.lock = threading.Lock()

    def reserve(self, n):
        with self.lock:
            now = time.monotonic()
            self.tat = max(self.tat, now - self.burst_s) + n / self.rate
            return self.tat - self.burst_s - now


def cmd_throttle(a):
    """Forwarding TCP proxy 127.0.0.1:listen-port -> target: relays bytes both ways,
    the target->client direction limited to --rate MB/s (10^6 bytes) per connection
    (--conn-rate, default the same) and in total (one shared bucket): a stand-in for
    a remote upstream reached over a link of that bandwidth.  Runs until SIGTERM or
    SIGINT; then prints one JSON line of totals on stdout."""
    import signal
    host, _, port = a.target.rpartition(":")
    target = (host or "127.0.0.1", int(port))
    chunk = a.chunk
    total = RateLimiter(a.rate * 1e6, max(chunk, a.burst))
    conn_rate = (a.conn_rate or a.rate) * 1e6
    lock = threading.Lock()
    st = {"connections": 0, "active": 0, "max_active": 0, "bytes_down": 0, "bytes_up": 0,
          "errors": 0}
    socks = set()

    def nodelay(s):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def pump(src, dst, limiters, key):
        buf = bytearray(chunk)
        mv = memoryview(buf)
        moved = 0
        try:
            while True:
                n = src.recv_into(buf)
                if not n:
                    break
                for lim in limiters:
                    d = lim.reserve(n)
                    if d > 0:
                        time.sleep(d)
                dst.sendall(mv[:n])
                moved += n
            how = socket.SHUT_WR   # clean EOF: pass the half-close on
        except OSError:
            how = socket.SHUT_RDWR  # reset or broken pipe: tear down both sides
        finally:
            with lock:
                st[key] += moved
        for s, h in ((dst, how), (src, socket.SHUT_RDWR if how == socket.SHUT_RDWR else None)):
            if h is not None:
                try:
                    s.shutdown(h)
                except OSError:
                    pass

    def handle(cs):
        with lock:
            st["connections"] += 1
            st["active"] += 1
            st["max_active"] = max(st["max_active"], st["active"])
            socks.add(cs)
        us = None
        try:
            us = socket.create_connection(target, timeout=30)
            us.settimeout(None)
            nodelay(cs)
            nodelay(us)
            with lock:
                socks.add(us)
            per_conn = RateLimiter(conn_rate, max(chunk, a.burst))
            up = threading.Thread(target=pump, args=(cs, us, [], "bytes_up"), daemon=True)
            up.start()
            pump(us, cs, [per_conn, total], "bytes_down")
            up.join()
        except OSError as e:
            with lock:
                st["errors"] += 1
            print(f"throttle: connection to {a.target}: {e}", file=sys.stderr)
        finally:
            for s in (cs, us):
                if s is not None:
                    with lock:
                        socks.discard(s)
                    s.close()
            with lock:
                st["active"] -= 1

    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", a.listen_port))
    ls.listen(256)

    def stop(_sig, _frm):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    t0 = time.monotonic()
    print(f"throttle: 127.0.0.1:{a.listen_port} -> {a.target}, {a.rate} MB/s down in total, "
          f"{conn_rate / 1e6:g} MB/s per connection", file=sys.stderr, flush=True)
    try:
        while True:
            cs, _addr = ls.accept()
            threading.Thread(target=handle, args=(cs,), daemon=True).start()
    finally:
        ls.close()
        with lock:
            for s in list(socks):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            out = dict(st, uptime_seconds=round(time.monotonic() - t0, 3), rate_mbs=a.rate)
        print(json.dumps(out), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("free-port").set_defaults(fn=cmd_free_port)
    s = sub.add_parser("push-image")
    s.add_argument("base"); s.add_argument("repo"); s.add_argument("tag"); s.add_argument("outdir")
    s.add_argument("--user", default=None, help="NAME:PASSWORD, sent as Basic credentials with every request")
    s.add_argument("--seed", type=int, default=None, help="layer bytes from this seed instead of os.urandom")
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
    s = sub.add_parser("push-multi")
    s.add_argument("base"); s.add_argument("tag"); s.add_argument("out")
    s.add_argument("--repo", action="append", required=True)
    s.add_argument("--platforms", default="linux/amd64,linux/arm64")
    s.add_argument("--layers", default="4-5", help="layers per platform: N or MIN-MAX")
    s.add_argument("--layer-bytes", default="1M-4M", help="bytes per layer: N or MIN-MAX (K/M/G)")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--single-post", choices=["probe", "yes", "no"], default="probe",
                   help="monolithic uploads as one POST ?digest= (yes), POST + PUT (no), or probe the "
                        "registry first with a 64-byte blob (default)")
    s.set_defaults(fn=cmd_push_multi)
    s = sub.add_parser("pull")
    s.add_argument("base"); s.add_argument("repo"); s.add_argument("tag")
    s.add_argument("--platform", default="linux/amd64", help="OS/ARCH, or all: every platform of the index")
    s.add_argument("--ns", default="", help="add ?ns=NS to every request (containerd mirror style)")
    s.add_argument("--parallel", type=int, default=4, help="blobs fetched at once per pull")
    s.add_argument("--clients", type=int, default=1, help="concurrent independent pulls")
    s.add_argument("--verify", action="store_true", help="check every blob's sha256 (costs CPU)")
    s.set_defaults(fn=cmd_pull)
    s = sub.add_parser("access-sum")
    s.add_argument("desc"); s.add_argument("log")
    s.add_argument("--from-line", type=int, default=0)
    s.set_defaults(fn=cmd_access_sum)
    s = sub.add_parser("throttle", help="bandwidth-limited forwarding TCP proxy")
    s.add_argument("--listen-port", type=int, required=True)
    s.add_argument("--target", required=True, help="HOST:PORT to forward to")
    s.add_argument("--rate", type=float, required=True,
                   help="target->client MB/s (10^6 bytes), per connection and in total")
    s.add_argument("--conn-rate", type=float, default=0, help="per-connection MB/s (default: --rate)")
    s.add_argument("--chunk", type=int, default=64 << 10, help="bytes per read")
    s.add_argument("--burst", type=int, default=256 << 10, help="token bucket depth, bytes")
    s.set_defaults(fn=cmd_throttle)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
