"""sidekick.boto3.attach against three s3s-fs nodes sharing one data directory.

s3s-fs checks SigV4, so every successful call also proves the signed Host survived the
re-targeting. It serves no /minio/health paths: the probes ask for ``/`` (ListBuckets without
credentials), which a live node answers with 403, so 200 and 403 count as healthy.

s3s-fs names its temporary upload files with a per-process counter, so two nodes writing at the
same moment can collide on a name; the test therefore keeps one writer (readers run alongside).
"""

from __future__ import annotations

import threading
import time
from typing import List

import pytest

boto3 = pytest.importorskip("boto3")
from botocore.config import Config  # noqa: E402

import sidekick  # noqa: E402
from sidekick.boto3 import attach  # noqa: E402

from conftest import ACCESS_KEY, SECRET_KEY, S3Node, wait_until  # noqa: E402

# Virtual and never connected to: loopback port 9, where nothing listens.
VIRTUAL = "http://127.0.0.1:9"


def make_client() -> object:
    return boto3.client(
        "s3",
        endpoint_url=VIRTUAL,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=1,
            read_timeout=5,
            max_pool_connections=16,
        ),
    )


def balancer_for(nodes: List[S3Node]) -> sidekick.Balancer:
    return sidekick.Balancer(
        ",".join(n.url for n in nodes),
        health_path="/",
        healthy_statuses=[200, 403],
        health_interval=0.2,
        health_timeout=1.0,
        connect_timeout=0.5,
    )


def test_put_get_across_three_nodes_with_one_killed(s3_nodes: List[S3Node]) -> None:
    b = balancer_for(s3_nodes)
    b.ready(10)
    assert wait_until(lambda: all(e.state == "up" for e in b.endpoints()), 10)
    s3 = make_client()
    attach(s3, b)
    s3.create_bucket(Bucket="sidekick-test")

    written: List[str] = []
    failures: List[str] = []
    lock = threading.Lock()
    done = threading.Event()
    calls = [0]

    def writer() -> None:
        deadline = time.monotonic() + 60
        for i in range(240):
            if time.monotonic() > deadline:
                break
            key = f"obj/{i:04d}"
            body = (key * 50).encode()
            try:
                s3.put_object(Bucket="sidekick-test", Key=key, Body=body)
                got = s3.get_object(Bucket="sidekick-test", Key=key)["Body"].read()
                if got != body:
                    raise AssertionError(f"{key}: wrong body")
                with lock:
                    written.append(key)
                    calls[0] += 2
            except Exception as e:  # pragma: no cover - reported below
                with lock:
                    failures.append(f"{key}: {e!r}")
        done.set()

    def reader() -> None:
        deadline = time.monotonic() + 60
        for n in range(2000):
            if done.is_set() or time.monotonic() > deadline:
                return
            with lock:
                keys = list(written[-5:])
            if not keys:
                time.sleep(0.01)
                continue
            key = keys[n % len(keys)]
            try:
                got = s3.get_object(Bucket="sidekick-test", Key=key)["Body"].read()
                if got != (key * 50).encode():
                    raise AssertionError(f"{key}: wrong body")
                s3.head_object(Bucket="sidekick-test", Key=key)
                with lock:
                    calls[0] += 2
            except Exception as e:  # pragma: no cover
                with lock:
                    failures.append(f"read {key}: {e!r}")

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        assert wait_until(lambda: len(written) >= 60, 30)
        victim = s3_nodes[1]
        victim.kill()
    finally:
        for t in threads:
            t.join(90)
    assert failures == []
    assert len(written) == 240
    info = {e.url: e for e in b.endpoints()}
    assert info[victim.url].state in ("down", "ejected")
    assert all(e.requests > 0 for e in info.values())  # every node served traffic
    # Listing through the balancer sees every object.
    listed = s3.list_objects_v2(Bucket="sidekick-test", Prefix="obj/", MaxKeys=1000)
    assert listed["KeyCount"] == 240
    print("calls:", calls[0], "endpoints:", list(info.values()))


def test_detach_and_no_endpoint(s3_nodes: List[S3Node]) -> None:
    b = balancer_for(s3_nodes[:1])
    b.ready(10)
    s3 = make_client()
    handle = attach(s3, b)
    s3.create_bucket(Bucket="one")
    s3.put_object(Bucket="one", Key="k", Body=b"v")
    s3_nodes[0].kill()
    assert wait_until(lambda: not b.is_available(), 5)
    from sidekick.boto3 import NoEndpointAvailable

    fast_fail = boto3.client(
        "s3",
        endpoint_url=VIRTUAL,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    attach(fast_fail, b)
    with pytest.raises(NoEndpointAvailable):
        fast_fail.get_object(Bucket="one", Key="k")
    handle.detach()
    from botocore.exceptions import EndpointConnectionError

    detached = s3  # now sends to the virtual URL itself, where nothing listens
    with pytest.raises(EndpointConnectionError):
        detached.head_bucket(Bucket="one")
