"""The S3 side of tests/s3_store.rs, with boto3 against a local S3 server (moto).

    python tests/s3_bucket.py ENDPOINT create BUCKET   # makes the bucket, prints {}
    python tests/s3_bucket.py ENDPOINT list BUCKET     # prints {key: [size, etag, last_modified]}
    python tests/s3_bucket.py ENDPOINT record start    # the server records requests from now
    python tests/s3_bucket.py ENDPOINT record stop     # prints the recorded [method, path] pairs
"""

import json
import sys

import urllib.request

import boto3

endpoint, action, bucket = sys.argv[1:4]
if action == "record":
    def moto_api(path, method="POST"):
        request = urllib.request.Request(f"{endpoint}/moto-api/recorder/{path}", method=method,
                                         data=b"" if method == "POST" else None)
        return urllib.request.urlopen(request).read().decode()
    if bucket == "start":
        moto_api("start-recording")
        print("{}")
    else:
        moto_api("stop-recording")
        lines = moto_api("download-recording", "GET").splitlines()
        requests = [json.loads(line) for line in lines if line.strip()]
        print(json.dumps([[r["method"], r["url"].split("/", 3)[-1]] for r in requests]))
    sys.exit(0)
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
if action == "create":
    s3.create_bucket(Bucket=bucket)
    print("{}")
else:
    objects = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            objects[o["Key"]] = [o["Size"], o["ETag"], o["LastModified"].isoformat()]
    print(json.dumps(objects))
