#!/usr/bin/env python3
"""Probes an S3-compatible server for the features Wharf's S3 back-end needs.

Reads S3_ENDPOINT, S3_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and S3_BUCKET from the
environment (as printed by scripts/s3-server.sh) and prints one line per probe:
    PASS|FAIL|INFO <name>: <detail>
Failures carry the server's HTTP status, error code and message. Needs boto3 (pip install boto3).
Exit code: 0 always (it is a survey, not a test); read the lines.
"""
import os
import sys
import time
import urllib.error
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["S3_ENDPOINT"]
REGION = os.environ["S3_REGION"]
BUCKET = os.environ["S3_BUCKET"]

s3 = boto3.client(
    "s3",
    endpoint_url=ENDPOINT,
    region_name=REGION,
    aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
    aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
    config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
)

PREFIX = f"probe-{int(time.time() * 1000)}/"


def err(e):
    r = e.response
    return (
        f"HTTP {r['ResponseMetadata'].get('HTTPStatusCode')} "
        f"{r['Error'].get('Code')}: {r['Error'].get('Message')}"
    )


def report(status, name, detail=""):
    print(f"{status} {name}: {detail}", flush=True)


def probe(name):
    def wrap(fn):
        try:
            ok, detail = fn()
            report("PASS" if ok else "FAIL", name, detail)
        except ClientError as e:
            report("FAIL", name, err(e))
        except Exception as e:  # noqa: BLE001 - a survey reports everything
            report("FAIL", name, f"{type(e).__name__}: {e}")
        return fn

    return wrap


K = PREFIX + "a/blob1"
BODY = bytes(range(256)) * 40  # 10240 bytes


@probe("PutObject (path-style)")
def _():
    r = s3.put_object(Bucket=BUCKET, Key=K, Body=BODY, ContentType="application/octet-stream")
    return True, f"ETag {r['ETag']}"


@probe("GetObject full")
def _():
    r = s3.get_object(Bucket=BUCKET, Key=K)
    b = r["Body"].read()
    return b == BODY, f"{len(b)} bytes, ETag {r['ETag']}"


@probe("GetObject Range bytes=100-199")
def _():
    r = s3.get_object(Bucket=BUCKET, Key=K, Range="bytes=100-199")
    b = r["Body"].read()
    st = r["ResponseMetadata"]["HTTPStatusCode"]
    return b == BODY[100:200] and st == 206, f"HTTP {st}, Content-Range {r.get('ContentRange')}"


@probe("GetObject Range bytes=10000- (open-ended)")
def _():
    r = s3.get_object(Bucket=BUCKET, Key=K, Range="bytes=10000-")
    b = r["Body"].read()
    return b == BODY[10000:], f"{len(b)} bytes, Content-Range {r.get('ContentRange')}"


@probe("GetObject Range bytes=-40 (suffix)")
def _():
    r = s3.get_object(Bucket=BUCKET, Key=K, Range="bytes=-40")
    b = r["Body"].read()
    return b == BODY[-40:], f"{len(b)} bytes, Content-Range {r.get('ContentRange')}"


@probe("GetObject Range past end bytes=20000-")
def _():
    try:
        s3.get_object(Bucket=BUCKET, Key=K, Range="bytes=20000-")
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"] == 416, err(e)
    return False, "no error"


@probe("GetObject missing key")
def _():
    try:
        s3.get_object(Bucket=BUCKET, Key=PREFIX + "nope")
    except ClientError as e:
        return e.response["Error"]["Code"] == "NoSuchKey", err(e)
    return False, "no error"


@probe("HeadObject")
def _():
    r = s3.head_object(Bucket=BUCKET, Key=K)
    h = r["ResponseMetadata"]["HTTPHeaders"]
    return r["ContentLength"] == len(BODY), (
        f"Content-Length {r['ContentLength']}, ETag {r['ETag']}, "
        f"Content-Type {r.get('ContentType')}, Last-Modified header {h.get('last-modified')!r}"
    )


@probe("HeadObject missing key")
def _():
    try:
        s3.head_object(Bucket=BUCKET, Key=PREFIX + "nope")
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"] == 404, err(e)
    return False, "no error"


for k in ["a/blob2", "a/sub/x", "a/sub/y", "b/z", "c"]:
    s3.put_object(Bucket=BUCKET, Key=PREFIX + k, Body=b"x")


@probe("ListObjectsV2 prefix")
def _():
    r = s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX + "a/")
    keys = [o["Key"][len(PREFIX):] for o in r.get("Contents", [])]
    return keys == ["a/blob1", "a/blob2", "a/sub/x", "a/sub/y"], f"keys {keys}"


@probe("ListObjectsV2 prefix+delimiter")
def _():
    r = s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX, Delimiter="/")
    keys = [o["Key"][len(PREFIX):] for o in r.get("Contents", [])]
    cps = [p["Prefix"][len(PREFIX):] for p in r.get("CommonPrefixes", [])]
    return keys == ["c"] and cps == ["a/", "b/"], f"keys {keys}, common prefixes {cps}"


@probe("ListObjectsV2 start-after")
def _():
    r = s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX, StartAfter=PREFIX + "a/sub/x")
    keys = [o["Key"][len(PREFIX):] for o in r.get("Contents", [])]
    return keys == ["a/sub/y", "b/z", "c"], f"keys {keys}"


@probe("ListObjectsV2 MaxKeys=2 + ContinuationToken")
def _():
    seen, tok, pages = [], None, 0
    while True:
        kw = {"ContinuationToken": tok} if tok else {}
        r = s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX, MaxKeys=2, **kw)
        pages += 1
        seen += [o["Key"][len(PREFIX):] for o in r.get("Contents", [])]
        if not r.get("IsTruncated"):
            break
        tok = r["NextContinuationToken"]
    return len(seen) == 6 and pages == 3, f"{pages} pages, keys {seen}"


@probe("ListObjectsV2 LastModified precision")
def _():
    r = s3.list_objects_v2(Bucket=BUCKET, Prefix=K)
    lm = r["Contents"][0]["LastModified"]
    return True, f"parsed {lm.isoformat()} (raw XML: see curl probe in docs)"


@probe("CopyObject")
def _():
    r = s3.copy_object(Bucket=BUCKET, Key=PREFIX + "copy", CopySource={"Bucket": BUCKET, "Key": K})
    b = s3.get_object(Bucket=BUCKET, Key=PREFIX + "copy")["Body"].read()
    return b == BODY, f"CopyObjectResult ETag {r['CopyObjectResult']['ETag']}"


@probe("DeleteObject")
def _():
    s3.delete_object(Bucket=BUCKET, Key=PREFIX + "copy")
    try:
        s3.head_object(Bucket=BUCKET, Key=PREFIX + "copy")
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"] == 404, "HEAD after delete: " + err(e)
    return False, "object still there"


@probe("DeleteObject missing key (idempotent)")
def _():
    r = s3.delete_object(Bucket=BUCKET, Key=PREFIX + "never-existed")
    return True, f"HTTP {r['ResponseMetadata']['HTTPStatusCode']}"


PART = 5 * 1024 * 1024
P1 = b"1" * PART
P2 = b"2" * 1000


@probe("Multipart create/upload-part/ListParts/complete")
def _():
    key = PREFIX + "mpu"
    up = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    e1 = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=up, PartNumber=1, Body=P1)["ETag"]
    e2 = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=up, PartNumber=2, Body=P2)["ETag"]
    lp = s3.list_parts(Bucket=BUCKET, Key=key, UploadId=up)
    parts = [(p["PartNumber"], p["Size"]) for p in lp.get("Parts", [])]
    lu = s3.list_multipart_uploads(Bucket=BUCKET, Prefix=PREFIX)
    ups = [u["UploadId"] for u in lu.get("Uploads", [])]
    r = s3.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
    )
    b = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    ok = b == P1 + P2 and parts == [(1, PART), (2, 1000)] and up in ups
    return ok, f"ListParts {parts}, ListMultipartUploads had it: {up in ups}, final ETag {r['ETag']}"


@probe("Multipart small non-last part (<5 MiB) rejected at complete")
def _():
    key = PREFIX + "mpu-small"
    up = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    e1 = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=up, PartNumber=1, Body=b"a" * 10)["ETag"]
    e2 = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=up, PartNumber=2, Body=b"b" * 10)["ETag"]
    try:
        s3.complete_multipart_upload(
            Bucket=BUCKET, Key=key, UploadId=up,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
        )
    except ClientError as e:
        s3.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=up)
        return True, "rejected: " + err(e)
    return True, "ACCEPTED (server does not enforce the 5 MiB minimum part size)"


@probe("Multipart abort")
def _():
    key = PREFIX + "mpu-abort"
    up = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    s3.upload_part(Bucket=BUCKET, Key=key, UploadId=up, PartNumber=1, Body=b"zz")
    s3.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=up)
    try:
        s3.list_parts(Bucket=BUCKET, Key=key, UploadId=up)
    except ClientError as e:
        return True, "ListParts after abort: " + err(e)
    return False, "ListParts still answers after abort"


@probe("UploadPartCopy")
def _():
    key = PREFIX + "mpu-copy"
    up = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    r = s3.upload_part_copy(Bucket=BUCKET, Key=key, UploadId=up, PartNumber=1,
                            CopySource={"Bucket": BUCKET, "Key": K})
    e1 = r["CopyPartResult"]["ETag"]
    s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=up,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}]})
    b = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return b == BODY, "copied part round-trips"


# ---- conditional writes -------------------------------------------------------------------------

@probe("PutObject If-None-Match: * on new key")
def _():
    r = s3.put_object(Bucket=BUCKET, Key=PREFIX + "cond", Body=b"first", IfNoneMatch="*")
    return True, f"HTTP {r['ResponseMetadata']['HTTPStatusCode']}"


@probe("PutObject If-None-Match: * on existing key (want 412)")
def _():
    try:
        s3.put_object(Bucket=BUCKET, Key=PREFIX + "cond", Body=b"second", IfNoneMatch="*")
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"] == 412, err(e)
    b = s3.get_object(Bucket=BUCKET, Key=PREFIX + "cond")["Body"].read()
    return False, f"server answered 200 and overwrote (body now {b!r}): header ignored"


@probe("PutObject If-Match: <current etag> (want 200)")
def _():
    et = s3.head_object(Bucket=BUCKET, Key=PREFIX + "cond")["ETag"]
    r = s3.put_object(Bucket=BUCKET, Key=PREFIX + "cond", Body=b"third", IfMatch=et)
    return True, f"HTTP {r['ResponseMetadata']['HTTPStatusCode']}"


@probe("PutObject If-Match: <wrong etag> (want 412)")
def _():
    try:
        s3.put_object(Bucket=BUCKET, Key=PREFIX + "cond", Body=b"fourth",
                      IfMatch='"00000000000000000000000000000000"')
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"] == 412, err(e)
    b = s3.get_object(Bucket=BUCKET, Key=PREFIX + "cond")["Body"].read()
    return False, f"server answered 200 and overwrote (body now {b!r}): header ignored"


@probe("PutObject If-Match on missing key (want 404 or 412)")
def _():
    try:
        s3.put_object(Bucket=BUCKET, Key=PREFIX + "cond-missing", Body=b"x",
                      IfMatch='"00000000000000000000000000000000"')
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"] in (404, 412), err(e)
    return False, "server answered 200 and created the object: header ignored"


def mpu_complete(key, **kw):
    up = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    e1 = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=up, PartNumber=1, Body=b"m")["ETag"]
    try:
        return s3.complete_multipart_upload(
            Bucket=BUCKET, Key=key, UploadId=up,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}]}, **kw)
    except ClientError:
        try:
            s3.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=up)
        except ClientError:
            pass
        raise


@probe("CompleteMultipartUpload If-None-Match: * on new key")
def _():
    r = mpu_complete(PREFIX + "cond-mpu", IfNoneMatch="*")
    return True, f"HTTP {r['ResponseMetadata']['HTTPStatusCode']}"


@probe("CompleteMultipartUpload If-None-Match: * on existing key (want 412)")
def _():
    try:
        mpu_complete(PREFIX + "cond-mpu", IfNoneMatch="*")
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"] == 412, err(e)
    return False, "server answered 200 and overwrote: header ignored"


@probe("CopyObject onto existing key with If-None-Match: * (want 412)")
def _():
    # CopyObject has no IfNoneMatch parameter in boto3; add the header by hand.
    def add(request, **_):
        request.headers["If-None-Match"] = "*"
    s3.meta.events.register_first("before-sign.s3.CopyObject", add)
    try:
        s3.copy_object(Bucket=BUCKET, Key=PREFIX + "cond", CopySource={"Bucket": BUCKET, "Key": K})
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"] == 412, err(e)
    finally:
        s3.meta.events.unregister("before-sign.s3.CopyObject", add)
    return False, "server answered 200 and overwrote: header ignored"


# ---- presigned URLs -----------------------------------------------------------------------------

@probe("Presigned GET URL")
def _():
    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": K}, ExpiresIn=60)
    with urllib.request.urlopen(url) as r:
        b = r.read()
    return b == BODY, f"{len(b)} bytes via plain HTTP GET"


@probe("Presigned GET URL with Range header")
def _():
    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": K}, ExpiresIn=60)
    req = urllib.request.Request(url, headers={"Range": "bytes=0-9"})
    with urllib.request.urlopen(req) as r:
        b = r.read()
        st = r.status
    return b == BODY[:10] and st == 206, f"HTTP {st}, {len(b)} bytes"


@probe("Presigned GET URL expired (want a 4xx refusal)")
def _():
    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": K}, ExpiresIn=1)
    time.sleep(2.5)
    try:
        urllib.request.urlopen(url)
    except urllib.error.HTTPError as e:
        return e.code in (400, 403), f"HTTP {e.code}: {e.read()[:300]!r}"
    return False, "expired URL still served"


@probe("Presigned PUT URL")
def _():
    url = s3.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": PREFIX + "presigned-put"},
                                    ExpiresIn=60)
    req = urllib.request.Request(url, data=b"via-presigned", method="PUT")
    with urllib.request.urlopen(req) as r:
        st = r.status
    b = s3.get_object(Bucket=BUCKET, Key=PREFIX + "presigned-put")["Body"].read()
    return b == b"via-presigned", f"HTTP {st}"


@probe("Wrong region in signature")
def _():
    bad = boto3.client(
        "s3", endpoint_url=ENDPOINT, region_name="us-east-1",
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    try:
        bad.head_object(Bucket=BUCKET, Key=K)
    except ClientError as e:
        return True, "rejected: " + err(e)
    return True, "accepted (region not checked)"


@probe("DeleteObjects (batch)")
def _():
    r = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": PREFIX + "b/z"}, {"Key": PREFIX + "c"}]})
    return len(r.get("Deleted", [])) == 2, f"deleted {len(r.get('Deleted', []))}, errors {r.get('Errors')}"


if __name__ == "__main__":
    sys.exit(0)
