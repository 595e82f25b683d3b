#!/usr/bin/env python3
"""Import throughput: `cairn import` beside `rclone sync` and `aws s3 sync`, the same
objects into fresh buckets of one `cairn dev` cluster, in the same run.

It makes a binary-cache-shaped data set (narinfo-sized text objects, NAR-sized random ones
with log-uniform sizes, a few large enough for multipart uploads), starts moto (a local S3
server) holding it and a `cairn dev` cluster, then times, per round:

  S3 -> S3   cairn import  (moto -> Cairn)      rclone sync  (moto -> Cairn)
  dir -> S3  cairn import  (file:// -> Cairn)   rclone sync, aws s3 sync (dir -> Cairn)

`--pairs 2000 --large 0 --nar-max-kib 4` makes a set of small objects only, for objects/s.
The aws cli copies between two endpoints only through a local copy, so it appears in the
directory rows only. Every tool gets the same concurrency (--jobs). Each run is checked
afterwards: the destination must list every object with the right size. Prints a table and
one JSON line.

    cargo build --release
    ops/bench/import_bench.py --cairn target/release/cairn

Needs moto (`pip install 'moto[server]'`), the aws cli and rclone.
"""

import argparse
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(count):
    """A base port with `count` free ports after it (cairn dev uses consecutive ones)."""
    rng = random.Random()
    for _ in range(1000):
        base = rng.randrange(20000, 32000 - count)
        ok = True
        for port in range(base, base + count):
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    try:
                        s.bind(("127.0.0.1", port))
                    except OSError:
                        ok = False
        if ok:
            return base
    sys.exit("no free ports")


def wait_port(port, proc, what):
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited early")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen")


def make_data(root, pairs, large, large_mib, nar_max_kib, seed):
    """`pairs` narinfo + NAR pairs and `large` big NARs; returns (objects, bytes)."""
    rng = random.Random(seed)
    os.makedirs(os.path.join(root, "nar"))
    with open(os.path.join(root, "nix-cache-info"), "w") as f:
        f.write("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n")
    total = len("StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n")
    count = 1

    def name(n):
        return "".join(rng.choice(NIX32) for _ in range(n))

    sizes = [int(math.exp(rng.uniform(math.log(1 << 10), math.log(nar_max_kib << 10)))) for _ in range(pairs)]
    sizes += [large_mib << 20] * large
    for size in sizes:
        nar = f"nar/{name(52)}.nar.zst"
        with open(os.path.join(root, nar), "wb") as f:
            f.write(os.urandom(size))
        text = (
            f"StorePath: /nix/store/{name(32)}-bench\nURL: {nar}\nCompression: zstd\n"
            f"FileSize: {size}\nNarSize: {size * 3}\nReferences: \n" + "X" * rng.randrange(300, 1500) + "\n"
        )
        with open(os.path.join(root, f"{name(32)}.narinfo"), "w") as f:
            f.write(text)
        total += size + len(text)
        count += 2
    return count, total


def run(cmd, env=None, quiet=True):
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cairn", default="target/release/cairn")
    parser.add_argument("--pairs", type=int, default=1000, help="narinfo + NAR pairs")
    parser.add_argument("--large", type=int, default=2, help="NARs of --large-mib each")
    parser.add_argument("--large-mib", type=int, default=40)
    parser.add_argument("--nar-max-kib", type=int, default=4096,
                        help="NAR sizes are log-uniform between 1 KiB and this")
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    for tool in ("moto_server", "aws", "rclone"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed")
    cairn = os.path.abspath(args.cairn)
    work = tempfile.mkdtemp(prefix="cairn-import-bench-")
    procs = []
    try:
        data = os.path.join(work, "data")
        objects, size = make_data(data, args.pairs, args.large, args.large_mib, args.nar_max_kib, 1)
        print(f"data: {objects} objects, {size / 2**20:.1f} MiB", file=sys.stderr)

        moto_port = free_port()
        moto = subprocess.Popen(
            ["moto_server", "-H", "127.0.0.1", "-p", str(moto_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(moto)
        wait_port(moto_port, moto, "moto_server")
        moto_url = f"http://127.0.0.1:{moto_port}"

        base = free_ports(10)
        token = "import-bench-admin-token-0123456789"
        env = dict(os.environ, CAIRN_LOG="warn", CAIRN_ADMIN_TOKEN=token)
        dev = subprocess.Popen(
            [cairn, "dev", "--data", os.path.join(work, "dev"),
             "--s3-listen", f"127.0.0.1:{base}", "--admin-listen", f"127.0.0.1:{base + 1}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )
        procs.append(dev)
        key_id = secret = None
        for line in dev.stdout:
            if line.startswith("access key id:"):
                key_id = line.split(":", 1)[1].strip()
            elif line.startswith("secret access key:"):
                secret = line.split(":", 1)[1].strip()
            elif line.startswith("Ctrl-C"):
                break
        if not key_id:
            sys.exit("cairn dev did not start")
        gateway = f"http://127.0.0.1:{base}"
        admin = [cairn, "admin", "--endpoint", f"http://127.0.0.1:{base + 1}"]

        aws_config = os.path.join(work, "aws-config")
        with open(aws_config, "w") as f:
            f.write(f"[default]\ns3 =\n    max_concurrent_requests = {args.jobs}\n")

        def aws_env(key, secret_key):
            return dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret_key,
                        AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=aws_config,
                        AWS_SHARED_CREDENTIALS_FILE="/dev/null")

        rclone_env = dict(os.environ, RCLONE_CONFIG="/dev/null")
        for remote, url, (k, s) in (("MOTO", moto_url, ("testing", "testing")), ("CAIRN", gateway, (key_id, secret))):
            rclone_env.update({
                f"RCLONE_CONFIG_{remote}_TYPE": "s3",
                f"RCLONE_CONFIG_{remote}_PROVIDER": "Other",
                f"RCLONE_CONFIG_{remote}_ACCESS_KEY_ID": k,
                f"RCLONE_CONFIG_{remote}_SECRET_ACCESS_KEY": s,
                f"RCLONE_CONFIG_{remote}_ENDPOINT": url,
                f"RCLONE_CONFIG_{remote}_REGION": "us-east-1",
            })
        rclone_env.pop("AWS_CA_BUNDLE", None)

        run(["aws", "--endpoint-url", moto_url, "s3", "mb", "s3://source"], env=aws_env("testing", "testing"))
        run(["aws", "--endpoint-url", moto_url, "s3", "sync", data, "s3://source", "--only-show-errors"],
            env=aws_env("testing", "testing"))

        import_env = dict(os.environ, CAIRN_LOG="warn", CAIRN_ACCESS_KEY=key_id, CAIRN_SECRET_KEY=secret,
                          AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
        common = ["--endpoint", gateway, "--jobs", str(args.jobs), "--progress-interval", "0"]
        jobs = str(args.jobs)
        tools = [
            ("cairn import", "S3 -> S3", lambda b: ([cairn, "import", *common, "--source-endpoint", moto_url,
                                                    "s3://source", f"s3://{b}"], import_env)),
            ("rclone sync", "S3 -> S3", lambda b: (["rclone", "sync", "moto:source", f"cairn:{b}",
                                                   "--transfers", jobs, "--checkers", jobs], rclone_env)),
            ("cairn import", "dir -> S3", lambda b: ([cairn, "import", *common, f"file://{data}", f"s3://{b}"],
                                                    import_env)),
            ("rclone sync", "dir -> S3", lambda b: (["rclone", "sync", data, f"cairn:{b}",
                                                    "--transfers", jobs, "--checkers", jobs], rclone_env)),
            ("aws s3 sync", "dir -> S3", lambda b: (["aws", "--endpoint-url", gateway, "s3", "sync", data,
                                                    f"s3://{b}", "--only-show-errors"], aws_env(key_id, secret))),
        ]
        results = []
        for round_ in range(args.rounds):
            for index, (tool, path, command) in enumerate(tools):
                bucket = f"bench-{round_}-{index}"
                run(admin + ["bucket", "create", bucket], env=env)
                cmd, cmd_env = command(bucket)
                start = time.perf_counter()
                run(cmd, env=cmd_env)
                seconds = time.perf_counter() - start
                listed = json.loads(run(["aws", "--endpoint-url", gateway, "s3api", "list-objects-v2",
                                         "--bucket", bucket, "--output", "json"], env=aws_env(key_id, secret)))
                contents = listed.get("Contents", [])
                got = sum(o["Size"] for o in contents)
                if len(contents) != objects or got != size:
                    sys.exit(f"{tool} {path}: {len(contents)} objects, {got} bytes; expected {objects}, {size}")
                results.append({"tool": tool, "path": path, "round": round_, "objects": objects,
                                "mib": size / 2**20, "seconds": seconds,
                                "objects_per_s": objects / seconds, "mib_per_s": size / 2**20 / seconds})
                print(f"{tool:<13} {path:<10} round {round_}: {seconds:7.2f} s  "
                      f"{objects / seconds:8.1f} objects/s  {size / 2**20 / seconds:7.2f} MiB/s", file=sys.stderr)

        print(f"\n| tool | path | objects | MiB | seconds | objects/s | MiB/s |\n|---|---|---|---|---|---|---|")
        for r in results:
            print(f"| {r['tool']} | {r['path']} | {r['objects']} | {r['mib']:.1f} | {r['seconds']:.2f} | "
                  f"{r['objects_per_s']:.1f} | {r['mib_per_s']:.2f} |")
        print(json.dumps({"jobs": args.jobs, "objects": objects, "bytes": size, "results": results}))
    finally:
        for p in procs:
            p.kill()
            p.wait()
        if args.keep:
            print(f"work folder: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
