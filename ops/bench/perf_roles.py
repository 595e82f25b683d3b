#!/usr/bin/env python3
"""CPU of a `cairn dev` process by role, from a `perf record --call-graph dwarf` profile.

`cairn dev` runs the nodes, the coordinator and the gateway in one process on one tokio
runtime, so threads say nothing about roles; each sample's call chain does. A sample is
put in the first role whose marker appears anywhere in its chain (the order below matters:
a node's proof building runs on the blocking pool, a QUIC connection's packets in quinn's
driver tasks), and within a role by what its innermost frames do (hashing, the cipher,
copies, the kernel). With --seconds and --gib (CPU-seconds the process used while the
profile ran, and GiB served), shares become CPU-seconds per GiB.

    perf record -F 499 --call-graph dwarf,16384 -p PID -o perf.data -- sleep 20
    perf script -i perf.data | ops/bench/perf_roles.py --seconds 12.3 --gib 4
"""

import argparse
import collections
import re
import sys

# (role, markers): the first role with a marker in a sample's chain takes it.
ROLES = [
    ("node: read, prove (hash) and queue the proof", ["cairn_node::"]),
    ("gateway: verify + unmask", ["verify_into", "UnverifiedShard", "SliceProof", "cairn_erasure::mask"]),
    ("gateway: receive, assemble, rest of the read path", ["cairn_gateway::data_path::read", "cairn_client::node"]),
    ("QUIC send (packets built, sealed, sent)", ["poll_transmit", "quinn_udp::imp::send", "drive_transmit"]),
    ("QUIC receive (packets read, opened, streams filled)", ["handle_event", "handle_packet", "handle_datagram", "EndpointDriver", "quinn_udp::imp::recv", "process_payload", "drive_recv"]),
    ("HTTP send (hyper, s3s)", ["hyper::", "s3s::", "cairn_gateway::"]),
    ("coordinator", ["cairn_coordinator::", "openraft::"]),
    # BLAKE3's assembly carries no unwind tables, so its samples end at the hash function:
    # the node's proof and the gateway's check together.
    ("BLAKE3 (node's proof + gateway's check, not told apart)", ["blake3"]),
    ("tokio runtime / idle / other", [""]),
]

KINDS = [
    ("hash (BLAKE3)", ["blake3"]),
    ("cipher (ChaCha20 unmask)", ["chacha", "cipher::"]),
    ("AEAD (AES-GCM)", ["aes", "gcm", "ring_core", "ring::aead"]),
    ("copy (memcpy/memmove)", ["memcpy", "memmove", "copy_user", "copy_page", "copy_to_user", "copy_from_user", "rep_movs"]),
    ("page faults / clearing", ["clear_page", "do_anonymous_page", "handle_mm_fault", "page_fault", "exc_page_fault"]),
    ("kernel (syscalls, network)", ["[kernel", "entry_SYSCALL", "__x64_sys", "udp_", "ip_", "tcp_", "__sys_"]),
    ("allocator", ["malloc", "free", "_int_", "realloc"]),
]


def samples(stream):
    frames = []
    for line in stream:
        line = line.rstrip("\n")
        if not line.strip():
            if frames:
                yield frames
                frames = []
            continue
        if line.startswith((" ", "\t")):
            frames.append(line.strip())
    if frames:
        yield frames


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, help="CPU-seconds the process used while profiled")
    parser.add_argument("--gib", type=float, help="GiB served while profiled")
    args = parser.parse_args()
    roles = collections.Counter()
    kinds = collections.defaultdict(collections.Counter)
    total = 0
    for frames in samples(sys.stdin):
        total += 1
        chain = " ".join(frames)
        role = next(name for name, markers in ROLES if any(m in chain for m in markers))
        roles[role] += 1
        # What the innermost few frames do.
        inner = " ".join(frames[:4])
        kind = next((name for name, markers in KINDS if any(m in inner for m in markers)), "other")
        kinds[role][kind] += 1
    if not total:
        sys.exit("no samples on standard input")
    per_gib = args.seconds / args.gib if args.seconds and args.gib else None
    print(f"{total} samples" + (f"; {per_gib:.2f} CPU-s per GiB in all" if per_gib else ""))
    print()
    print("| role | share | CPU-s per GiB | of which |")
    print("|---|---|---|---|")
    for role, count in roles.most_common():
        share = count / total
        cell = f"{share * per_gib:.3f}" if per_gib else ""
        detail = ", ".join(f"{k} {c / count:.0%}" for k, c in kinds[role].most_common(4))
        print(f"| {role} | {share:.1%} | {cell} | {detail} |")


if __name__ == "__main__":
    main()
