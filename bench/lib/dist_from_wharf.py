#!/usr/bin/env python3
"""Copy a wharf data directory's hosted content into a CNCF distribution (docker-registry 2.8) filesystem
storage root, so both registries' garbage collectors run on the same content (bench/run.sh, section gc).

    python3 dist_from_wharf.py WHARF_DATA_DIR DIST_ROOTDIR

Wharf layout (crates/wharf/src/store/keys.rs) -> distribution layout (registry/storage/paths.go):
  blobs/sha256/<2>/<hex>                     -> docker/registry/v2/blobs/sha256/<2>/<hex>/data (hard link)
  repos/<name>/_blobs/sha256/<hex>           -> repositories/<name>/_layers/sha256/<hex>/link
  repos/<name>/_manifests/sha256/<hex>       -> blobs/.../data (the bytes after the media-type line)
                                                + repositories/<name>/_manifests/revisions/sha256/<hex>/link
  repos/<name>/_tags/<tag>                   -> repositories/<name>/_manifests/tags/<tag>/current/link
                                                + .../tags/<tag>/index/sha256/<hex>/link
Prints one JSON line: counts of what was written.
"""
import json
import os
import sys


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def main():
    src, dst = sys.argv[1], sys.argv[2]
    v2 = os.path.join(dst, "docker", "registry", "v2")
    blobs_dst = os.path.join(v2, "blobs", "sha256")
    counts = {"blobs": 0, "manifests": 0, "tags": 0, "links": 0, "repositories": 0}

    def blob_data(hexd):
        return os.path.join(blobs_dst, hexd[:2], hexd, "data")

    pool = os.path.join(src, "blobs", "sha256")
    for shard in sorted(os.listdir(pool)) if os.path.isdir(pool) else []:
        for hexd in os.listdir(os.path.join(pool, shard)):
            if hexd.startswith("."):
                continue
            target = blob_data(hexd)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.link(os.path.join(pool, shard, hexd), target)
            counts["blobs"] += 1
    repos_root = os.path.join(src, "repos")
    for dirpath, dirnames, _ in os.walk(repos_root):
        if "_manifests" not in dirnames and "_blobs" not in dirnames:
            dirnames[:] = [d for d in dirnames if not d.startswith("_")]
            continue
        name = os.path.relpath(dirpath, repos_root)
        dirnames[:] = [d for d in dirnames if not d.startswith("_")]
        repo = os.path.join(v2, "repositories", name)
        counts["repositories"] += 1
        links = os.path.join(dirpath, "_blobs", "sha256")
        for hexd in os.listdir(links) if os.path.isdir(links) else []:
            if hexd.startswith("."):
                continue
            write(os.path.join(repo, "_layers", "sha256", hexd, "link"), b"sha256:" + hexd.encode())
            counts["links"] += 1
        mans = os.path.join(dirpath, "_manifests", "sha256")
        for hexd in os.listdir(mans) if os.path.isdir(mans) else []:
            if hexd.startswith("."):
                continue
            with open(os.path.join(mans, hexd), "rb") as f:
                raw = f.read()
            body = raw.split(b"\n", 1)[1]
            write(blob_data(hexd), body)
            write(os.path.join(repo, "_manifests", "revisions", "sha256", hexd, "link"), b"sha256:" + hexd.encode())
            counts["manifests"] += 1
        tags = os.path.join(dirpath, "_tags")
        for tag in os.listdir(tags) if os.path.isdir(tags) else []:
            if tag.startswith("."):
                continue
            with open(os.path.join(tags, tag), "rb") as f:
                digest = f.read().strip()
            hexd = digest.split(b":", 1)[1].decode()
            base = os.path.join(repo, "_manifests", "tags", tag)
            write(os.path.join(base, "current", "link"), digest)
            write(os.path.join(base, "index", "sha256", hexd, "link"), digest)
            counts["tags"] += 1
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
