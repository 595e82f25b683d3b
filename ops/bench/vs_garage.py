#!/usr/bin/env python3
"""One boto3 load against `cairn dev` and, with --garage, a local three-node Garage, printed
side by side (the table of issue 23):

    64 MiB PUT and GET, 1 stream and 4 streams (MiB/s)
    2 KiB PUT and GET (ops/s, 4 client processes)
    HEAD of a missing key, p99 (ms)
    bytes on disk for the data written (the large and small objects)
    CPU seconds of each server process per GiB of GET, and of the client

Each system is started on a fresh folder under --work, loaded, measured and stopped; with
--rounds N the systems alternate N times. Every figure is printed per round, then the
range. Garage is run only when asked and when a `garage` binary is on PATH (or named with
--garage-bin); otherwise the script says it was skipped. Garage runs with replication 3 and
its defaults, on loopback ports 3900-3932.

    cargo build --release --bin cairn
    ops/bench/vs_garage.py --cairn target/release/cairn            # Cairn only
    ops/bench/vs_garage.py --cairn target/release/cairn --garage   # both, if garage is there
"""

import argparse
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import boto3
from botocore.config import Config

MIB = 1 << 20
LARGE_MIB = 64


def client(endpoint, key_id, secret, region):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=16,
            retries={"max_attempts": 1},
            read_timeout=300,
        ),
    )


# --- the load: every worker is its own process with its own client, so the client's
# hashing and parsing never share one interpreter lock.

def _worker(job):
    target, kind, names, payload_len = job
    s3 = client(*target["client"])
    bucket = target["bucket"]
    payload = os.urandom(payload_len) if payload_len else b""
    latencies = []
    start = time.perf_counter()
    for name in names:
        t = time.perf_counter()
        if kind == "put":
            s3.put_object(Bucket=bucket, Key=name, Body=payload)
        elif kind == "get":
            body = s3.get_object(Bucket=bucket, Key=name)["Body"]
            got = 0
            while True:
                chunk = body.read(8 * MIB)
                if not chunk:
                    break
                got += len(chunk)
            if got != payload_len:
                raise RuntimeError(f"GET {name}: {got} bytes, expected {payload_len}")
        elif kind == "head-miss":
            try:
                s3.head_object(Bucket=bucket, Key=name)
                raise RuntimeError(f"HEAD {name} found a key that was never written")
            except s3.exceptions.ClientError as err:
                if err.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
                    raise
        latencies.append(time.perf_counter() - t)
    return time.perf_counter() - start, latencies


def run(pool, target, kind, names_per_worker, payload_len):
    jobs = [(target, kind, names, payload_len) for names in names_per_worker]
    start = time.perf_counter()
    results = pool.map(_worker, jobs)
    wall = time.perf_counter() - start
    latencies = sorted(l for _, ls in results for l in ls)
    return wall, latencies


def p99(values):
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * 0.99))]


def cpu_seconds(pids):
    """User + system CPU seconds of the processes `pids` so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def disk_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def load(target, pids, large_count, small_count, miss_count):
    """The whole load against one running system; returns its figures."""
    figures = {}
    prefix = f"bench-{int(time.time())}"
    with multiprocessing.Pool(4) as pool:
        for streams in (1, 4):
            names = [[f"{prefix}/large-{streams}-{w}-{i}" for i in range(large_count)] for w in range(streams)]
            wall, _ = run(pool, target, "put", names, LARGE_MIB * MIB)
            figures[f"put_64MiB_{streams}s_mib_s"] = streams * large_count * LARGE_MIB / wall
            before = cpu_seconds(pids)
            wall, _ = run(pool, target, "get", names, LARGE_MIB * MIB)
            served_gib = streams * large_count * LARGE_MIB / 1024
            figures[f"get_64MiB_{streams}s_mib_s"] = streams * large_count * LARGE_MIB / wall
            figures[f"get_64MiB_{streams}s_server_cpu_s_per_gib"] = (cpu_seconds(pids) - before) / served_gib
        per = max(1, small_count // 4)
        names = [[f"{prefix}/small-{w}-{i}" for i in range(per)] for w in range(4)]
        wall, _ = run(pool, target, "put", names, 2048)
        figures["put_2KiB_ops_s"] = 4 * per / wall
        wall, _ = run(pool, target, "get", names, 2048)
        figures["get_2KiB_ops_s"] = 4 * per / wall
        names = [[f"{prefix}/missing-{i}" for i in range(miss_count)]]
        _, latencies = run(pool, target, "head-miss", names, 0)
        figures["head_miss_p99_ms"] = p99(latencies) * 1000
    return figures


def wait_http(url, deadline_s, proc):
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before answering {url}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers, if only to say no
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {deadline_s} s")


def stop(procs):
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- Cairn

def cairn_round(args, work):
    data = os.path.join(work, "cairn-dev")
    key_id, secret = "GKbenchcairn", "bench-secret-0123456789"
    env = dict(os.environ, CAIRN_ACCESS_KEY=key_id, CAIRN_SECRET_KEY=secret, CAIRN_LOG="warn")
    log = open(os.path.join(work, "cairn.log"), "w")
    proc = subprocess.Popen([args.cairn, "dev", "--data", data], env=env, stdout=log, stderr=log)
    try:
        wait_http("http://127.0.0.1:9000/health", 120, proc)
        target = {"client": ("http://127.0.0.1:9000", key_id, secret, "us-east-1"), "bucket": "cache"}
        figures = load(target, [proc.pid], args.large_count, args.small_count, args.miss_count)
        figures["bytes_on_disk"] = disk_bytes(data)
        return figures
    finally:
        stop([proc])
        log.close()


# --- Garage: three nodes on loopback, replication 3, everything else its defaults.

GARAGE_CONFIG = """metadata_dir = "{dir}/meta"
data_dir = "{dir}/data"
db_engine = "lmdb"
replication_factor = 3
rpc_secret = "{secret}"
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
"""


def garage(bin_, config, *argv):
    out = subprocess.run([bin_, "-c", config, *argv], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"garage {' '.join(argv)}: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def garage_round(args, work):
    secret = os.urandom(32).hex()
    procs, configs, dirs = [], [], []
    logs = []
    try:
        for n in range(3):
            d = os.path.join(work, f"garage-{n}")
            os.makedirs(d)
            config = os.path.join(d, "garage.toml")
            with open(config, "w") as f:
                f.write(GARAGE_CONFIG.format(dir=d, secret=secret, rpc=3901 + 10 * n, s3=3900 + 10 * n, admin=3903 + 10 * n))
            log = open(os.path.join(d, "log"), "w")
            logs.append(log)
            procs.append(subprocess.Popen([args.garage_bin, "-c", config, "server"], stdout=log, stderr=log, env=dict(os.environ, RUST_LOG="warn")))
            configs.append(config)
            dirs.append(d)
        for n, proc in enumerate(procs):
            wait_http(f"http://127.0.0.1:{3903 + 10 * n}/health", 60, proc)
        ids = [garage(args.garage_bin, c, "node", "id", "-q").strip() for c in configs]
        for node_id in ids[1:]:
            garage(args.garage_bin, configs[0], "node", "connect", node_id)
        for node_id in ids:
            garage(args.garage_bin, configs[0], "layout", "assign", "-z", "dc1", "-c", "10G", node_id.split("@")[0])
        garage(args.garage_bin, configs[0], "layout", "apply", "--version", "1")
        out = garage(args.garage_bin, configs[0], "key", "create", "bench")
        key_id = re.search(r"Key ID:\s*(\S+)", out).group(1)
        key_secret = re.search(r"Secret key:\s*(\S+)", out).group(1)
        garage(args.garage_bin, configs[0], "bucket", "create", "cache")
        garage(args.garage_bin, configs[0], "bucket", "allow", "--read", "--write", "--owner", "cache", "--key", "bench")
        target = {"client": ("http://127.0.0.1:3900", key_id, key_secret, "garage"), "bucket": "cache"}
        # The layout takes a moment to reach every node; a first write succeeds once it has.
        s3 = client(*target["client"])
        deadline = time.time() + 60
        while True:
            try:
                s3.put_object(Bucket="cache", Key="ready", Body=b"x")
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        figures = load(target, [p.pid for p in procs], args.large_count, args.small_count, args.miss_count)
        figures["bytes_on_disk"] = sum(disk_bytes(d) for d in dirs)
        return figures
    finally:
        stop(procs)
        for log in logs:
            log.close()


ROWS = [
    ("64 MiB PUT, 1 stream (MiB/s)", "put_64MiB_1s_mib_s", "{:.0f}"),
    ("64 MiB PUT, 4 streams (MiB/s)", "put_64MiB_4s_mib_s", "{:.0f}"),
    ("64 MiB GET, 1 stream (MiB/s)", "get_64MiB_1s_mib_s", "{:.0f}"),
    ("64 MiB GET, 4 streams (MiB/s)", "get_64MiB_4s_mib_s", "{:.0f}"),
    ("2 KiB PUT (ops/s, 4 processes)", "put_2KiB_ops_s", "{:.0f}"),
    ("2 KiB GET (ops/s, 4 processes)", "get_2KiB_ops_s", "{:.0f}"),
    ("HEAD of a missing key, p99 (ms)", "head_miss_p99_ms", "{:.1f}"),
    ("bytes on disk (GB)", "bytes_on_disk", "{:.2f}"),
    ("server CPU-s per GiB of GET, 1 stream", "get_64MiB_1s_server_cpu_s_per_gib", "{:.2f}"),
    ("server CPU-s per GiB of GET, 4 streams", "get_64MiB_4s_server_cpu_s_per_gib", "{:.2f}"),
]


def span(values, fmt, scale=1.0):
    values = [v / scale for v in values]
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}–{fmt.format(hi)}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cairn", default="target/release/cairn", help="the cairn binary")
    parser.add_argument("--garage", action="store_true", help="also run a local three-node Garage")
    parser.add_argument("--garage-bin", default=shutil.which("garage"))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--large-count", type=int, default=4, help="64 MiB objects per stream")
    parser.add_argument("--small-count", type=int, default=400)
    parser.add_argument("--miss-count", type=int, default=300)
    parser.add_argument("--work", default=None, help="folder for the systems' data (fresh temporary one by default)")
    args = parser.parse_args()

    systems = [("Cairn", cairn_round)]
    if args.garage:
        if args.garage_bin and os.access(args.garage_bin, os.X_OK):
            systems.insert(0, ("Garage", garage_round))
        else:
            print("Garage skipped: no `garage` binary on PATH (or given with --garage-bin)", file=sys.stderr)
    else:
        print("Garage skipped: not asked for (--garage)", file=sys.stderr)

    results = {name: [] for name, _ in systems}
    for r in range(args.rounds):
        for name, fn in systems:
            work = tempfile.mkdtemp(prefix=f"vs-{name.lower()}-", dir=args.work)
            try:
                figures = fn(args, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            results[name].append(figures)
            print(json.dumps({"system": name, "round": r + 1, **{k: round(v, 2) for k, v in figures.items()}}), flush=True)

    names = [name for name, _ in systems]
    header = "| figure | " + " | ".join(names) + (" | Cairn ÷ Garage |" if len(names) == 2 else " |")
    print()
    print(header)
    print("|---" * (len(header.split("|")) - 2) + "|")
    for label, key, fmt in ROWS:
        scale = 1e9 if key == "bytes_on_disk" else 1.0
        cells = [span([f[key] for f in results[n]], fmt, scale) for n in names]
        if len(names) == 2:
            ratios = [c[key] / g[key] for g, c in zip(results["Garage"], results["Cairn"]) if g[key]]
            cells.append(span(ratios, "{:.2f}") if ratios else "")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
