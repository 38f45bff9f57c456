#!/usr/bin/env python3
"""Where a Tessera server's CPU went, from a `perf record -g` of it (benches/ab.sh with PERF_DIR
set makes one per run): every sample counted once, so the shares add up to 100%.

  python3 benches/perf_buckets.py FILE.data [FILE.data ...]

Per thread (the REST shards `tessera-http-N`, the gRPC shards, the audit writer
`tessera-audit`, ...), and within each: a sample whose innermost frame is in the kernel goes to
the system call it is under (`writev`, `fdatasync`, ...; `futex` where Rust calls it through
libc's `syscall`; a thread preempted on its way out of a call counts under that call), or to
interrupts and faults; one in user space goes to the Ed25519 base-point multiplication, SHA-512,
the rest of the signature (anything under a `sign` frame), the allocator, or "other user space".
First, the same for the whole server, with the audit writer's thread as one bucket. Reads
`perf script`'s text, so it needs only perf itself.
"""
import collections
import re
import subprocess
import sys

ALLOCATOR = re.compile(r"^(_?mi_|malloc|free|cfree|realloc|calloc|_int_malloc|_int_free)")
SYSCALL = re.compile(r"^__(?:x64|do)_sys_(\w+)$")


def wrapper_name(sym):
    """libc's name for a system call wrapper, down to the call's own: `__GI___writev` -> `writev`."""
    sym = sym.split("@")[0].removeprefix("__GI_").lstrip("_").removeprefix("libc_")
    return re.sub(r"(64)?(_nocancel\w*)?$", "", sym)


def samples(path):
    """(thread name, [frames innermost first]) per sample; a frame is (symbol, is_kernel)."""
    text = subprocess.run(["perf", "script", "-i", path, "-F", "comm,ip,sym,dso"],
                          capture_output=True, text=True, check=True).stdout
    for block in text.split("\n\n"):
        lines = [l for l in block.splitlines() if l.strip()]
        if not lines:
            continue
        comm, frames = lines[0].strip(), []
        for line in lines[1:]:
            parts = line.split(None, 1)
            if len(parts) < 2:
                continue
            rest = parts[1]
            dso = rest[rest.rfind("(") + 1:rest.rfind(")")] if "(" in rest else ""
            sym = rest[:rest.rfind("(")].strip() if "(" in rest else rest.strip()
            frames.append((sym.split("+0x")[0], "kernel" in dso or dso.startswith("[k")))
        if frames:
            yield comm, frames


def bucket(frames):
    sym, in_kernel = frames[0]
    if in_kernel:
        kernel = [s for s, k in frames if k]
        if not any(s.startswith(("entry_SYSCALL", "do_syscall")) for s in kernel):
            return "kernel: interrupts and faults"
        for s in kernel:
            m = SYSCALL.match(s)
            if m:
                return f"kernel: {m.group(1)}"
        # Preempted on the way out of a call (no sys_ frame left): name it by libc's wrapper.
        user = next((s for s, k in frames if not k), "?")
        return f"kernel: {wrapper_name(user)}"
    if "edwards25519_scalarmulbase" in sym:
        return "Ed25519 base-point multiplication"
    if "sha512" in sym.lower():
        return "SHA-512"
    if any("ED25519_sign" in s or "jwt::sign" in s for s, _ in frames):
        return "signature, the rest"
    if ALLOCATOR.match(sym):
        return "allocator"
    return "other user space"


def main():
    for path in sys.argv[1:]:
        by_thread = collections.defaultdict(collections.Counter)
        for comm, frames in samples(path):
            by_thread[comm][bucket(frames)] += 1
        total = sum(sum(c.values()) for c in by_thread.values())
        print(f"== {path}: {total} samples")
        whole = collections.Counter()
        for comm, counts in by_thread.items():
            if comm == "tessera-audit":
                whole["the audit writer's thread"] += sum(counts.values())
            else:
                whole.update(counts)
        print("  the whole server:")
        for name, k in whole.most_common():
            if k * 200 >= total:
                print(f"    {100 * k / total:5.1f}%  {name}")
        threads = sorted(by_thread.items(), key=lambda kv: -sum(kv[1].values()))
        for comm, counts in threads:
            n = sum(counts.values())
            if n * 100 < total:
                continue
            print(f"  {comm}: {100 * n / total:.1f}% of the server's samples")
            for name, k in counts.most_common():
                if k * 200 >= n:  # 0.5% of the thread and up
                    print(f"    {100 * k / n:5.1f}%  {name}")


if __name__ == "__main__":
    main()
