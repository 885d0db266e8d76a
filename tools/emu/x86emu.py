"""Run a static x86-64 Linux program on an emulated CPU this machine is not.

    python tools/emu/x86emu.py --cpu sapphire_rapids [--shim LIB] [--env NAME=VALUE ...]
                               PROGRAM [ARG ...]

The CPU is Bochs's (bochscpu-python 0.4.0, pip), modelled as one of its CPU
database's entries: Skylake-X (AVX-512 F/CD/BW/DQ/VL, no VNNI), Ice Lake,
Tiger Lake (AVX-512 VNNI), Sapphire Rapids (AVX-512 VNNI and BF16, AMX),
Cannon Lake (the wheel's default).  This is how grulite's AVX-512 and
AVX-512 VNNI kernel sets are tested on a machine without them
(tools/emu/run.sh): correctness only, Bochs's timings mean nothing.

The program must be static and need no more of Linux than a single-threaded
C program linked with musl does (musl-gcc -static): this script is its
kernel.  Memory is identity-mapped (1 GiB pages over the first 512 GiB,
pages made on first touch inside the program's segments, its brk heap, its
mmaps and its stack); a touch anywhere else ends the run like a segfault.
The system calls it answers: read / readv / pread64 / write / writev of
files opened read-only or read-write and of the standard streams, open /
openat / close / lseek / fstat / newfstatat, brk, mmap (anonymous or a
private copy of a file) / munmap, arch_prctl(ARCH_SET_FS), set_tid_address,
clock_gettime, sched_getaffinity (one CPU), exit / exit_group; the signal
mask, madvise and futex succeed and do nothing; clone fails (ENOSYS), so
thread pools run on the calling thread; anything else fails with ENOSYS,
named on stderr.

The exit status is the program's, 139 for a touch outside its memory, 70
for a fault or an exception Bochs raised.  The shim (tools/emu/bochs_shim.c,
built by run.sh) is preloaded into this script's Python by re-executing it:
the wheel needs two glibc 2.38 names, and the shim picks the CPU model.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import struct
import sys
import time

# bochscpu-python 0.4.0's CPU database, by index (its cpu.model parameter).
CPU_MODELS = {
    "skylake_x": 26,
    "cannonlake": 27,
    "icelake": 28,
    "tigerlake": 29,
    "sapphire_rapids": 30,
}

PAGE = 4096
PAGE_TABLES = 0xFF00_0000        # the PML4 and its one PDPT (physical = virtual)
SYSCALL_ENTRY = 0xFF10_0000      # IA32_LSTAR: a `hlt` that hands each call to Python
STACK_TOP = 0x7F_0000_0000
STACK_SIZE = 64 << 20
MMAP_BASE = 0x40_0000_0000
MMAP_SIZE = 64 << 30
BRK_SIZE = 4 << 30

ENOENT, EBADF, ENOMEM, EINVAL, ESPIPE, ENOTTY, ENOSYS = 2, 9, 12, 22, 29, 25, 38


class Fault(Exception):
    pass


class Memory:
    """Guest physical pages, made on first touch inside the allowed ranges."""

    def __init__(self, bochs_memory):
        self.mem = bochs_memory
        self.pages: dict[int, int] = {}         # guest page -> host address
        self.ranges: list[tuple[int, int]] = []
        self.outside: list[int] = []
        self.stop = lambda: None                 # the session's stop, once there is one

    def allow(self, lo: int, hi: int) -> None:
        self.ranges.append((lo & ~(PAGE - 1), hi))

    def page(self, addr: int) -> int:
        gpa = addr & ~(PAGE - 1)
        hva = self.pages.get(gpa)
        if hva is None:
            hva = self.mem.allocate_host_page()
            ctypes.memset(hva, 0, PAGE)
            self.mem.page_insert(gpa, hva)
            self.pages[gpa] = hva
        return hva

    def missing(self, gpa: int) -> None:
        # Called by Bochs for a page it has not got.  Raising here would
        # abort the process (the wheel cannot unwind): make the page, and
        # let the run loop stop and report a touch outside the ranges.
        if not any(lo <= gpa < hi for lo, hi in self.ranges):
            self.outside.append(gpa)
            self.stop()
        self.page(gpa)

    def check(self, addr: int, size: int) -> None:
        """A system call's buffer must lie in the program's memory."""
        if size and not any(lo <= addr and addr + size <= hi for lo, hi in self.ranges):
            raise Fault(f"a buffer outside the program's memory ({addr:#x}, {size} bytes)")

    def write(self, addr: int, data: bytes) -> None:
        self.check(addr, len(data))
        off = 0
        while off < len(data):
            a = addr + off
            n = min(len(data) - off, PAGE - (a & (PAGE - 1)))
            ctypes.memmove(self.page(a) + (a & (PAGE - 1)), data[off:off + n], n)
            off += n

    def read(self, addr: int, size: int) -> bytes:
        self.check(addr, size)
        out = bytearray()
        while size > 0:
            n = min(size, PAGE - (addr & (PAGE - 1)))
            out += ctypes.string_at(self.page(addr) + (addr & (PAGE - 1)), n)
            addr += n
            size -= n
        return bytes(out)

    def zero(self, addr: int, size: int) -> None:
        for gpa in range(addr & ~(PAGE - 1), addr + size, PAGE):
            if gpa in self.pages:
                ctypes.memset(self.pages[gpa], 0, PAGE)

    def cstring(self, addr: int, limit: int = 4096) -> bytes:
        out = bytearray()
        while len(out) < limit:
            b = self.read(addr + len(out), 1)
            if b == b"\0":
                return bytes(out)
            out += b
        raise Fault("an unterminated path")


class Linux:
    """The part of Linux's x86-64 system call interface a static musl program
    needs, answered from this Python process."""

    def __init__(self, mem: Memory, program: str, argv: list[str], env: list[str]):
        self.mem = mem
        self.files: dict[int, object] = {}
        self.next_fd = 3
        self.status: int | None = None
        self.entry, end = self.load(program)
        self.brk_start = self.brk = (end + PAGE - 1) & ~(PAGE - 1)
        mem.allow(self.brk_start, self.brk_start + BRK_SIZE)
        mem.allow(STACK_TOP - STACK_SIZE, STACK_TOP)
        mem.allow(MMAP_BASE, MMAP_BASE + MMAP_SIZE)
        self.mmap_next = MMAP_BASE
        self.sp = self.initial_stack(argv, env)

    def load(self, path: str) -> tuple[int, int]:
        with open(path, "rb") as f:
            elf = f.read()
        if elf[:4] != b"\x7fELF" or elf[4] != 2 or struct.unpack_from("<H", elf, 18)[0] != 62:
            raise SystemExit(f"x86emu: {path} is not an x86-64 ELF file")
        if struct.unpack_from("<H", elf, 16)[0] != 2:
            raise SystemExit(f"x86emu: {path} is not a static executable (link it with -static)")
        entry, phoff = struct.unpack_from("<QQ", elf, 24)
        phentsize, phnum = struct.unpack_from("<HH", elf, 54)
        end = 0
        for i in range(phnum):
            p_type, _flags, off, vaddr, _paddr, filesz, memsz, _align = struct.unpack_from(
                "<IIQQQQQQ", elf, phoff + i * phentsize)
            if p_type == 3:
                raise SystemExit(f"x86emu: {path} asks for a dynamic loader (link it with -static)")
            if p_type == 1:                  # PT_LOAD
                self.mem.allow(vaddr, vaddr + memsz)
                self.mem.write(vaddr, elf[off:off + filesz])
                end = max(end, vaddr + memsz)
        return entry, end

    def initial_stack(self, argv: list[str], env: list[str]) -> int:
        sp = STACK_TOP - PAGE
        pointers = []
        for a in [*argv, *env]:
            b = a.encode() + b"\0"
            sp -= len(b)
            self.mem.write(sp, b)
            pointers.append(sp)
        sp -= 16
        random_bytes = sp
        self.mem.write(random_bytes, os.urandom(16))
        sp &= ~15
        auxv = [6, PAGE, 25, random_bytes, 0, 0]          # AT_PAGESZ, AT_RANDOM, AT_NULL
        args, envs = pointers[:len(argv)], pointers[len(argv):]
        words = [len(argv), *args, 0, *envs, 0, *auxv]    # argc, argv, NULL, environment, NULL
        if len(words) % 2:
            words.append(0)
        sp -= 8 * len(words)
        self.mem.write(sp, b"".join(struct.pack("<Q", w) for w in words))
        return sp

    def out(self, fd: int, data: bytes) -> int:
        if fd in (1, 2):
            stream = sys.stdout if fd == 1 else sys.stderr
            stream.buffer.write(data)
            stream.flush()
            return len(data)
        f = self.files.get(fd)
        if f is None:
            return -EBADF
        return f.write(data)

    def iovecs(self, addr: int, count: int) -> list[tuple[int, int]]:
        return [struct.unpack("<QQ", self.mem.read(addr + 16 * i, 16)) for i in range(count)]

    def stat(self, buf: int, mode: int, size: int) -> int:
        st = bytearray(144)
        struct.pack_into("<I", st, 24, mode)
        struct.pack_into("<q", st, 48, size)
        struct.pack_into("<q", st, 56, PAGE)
        self.mem.write(buf, bytes(st))
        return 0

    def call(self, nr: int, a: list[int]) -> int:
        mem = self.mem
        signed = [x - (1 << 64) if x >= 1 << 63 else x for x in a]
        if nr in (60, 231):                                  # exit, exit_group
            self.status = a[0] & 0xFF
            return 0
        if nr == 1:                                          # write
            return self.out(a[0], mem.read(a[1], a[2]))
        if nr == 20:                                         # writev
            return sum(self.out(a[0], mem.read(b, n)) for b, n in self.iovecs(a[1], a[2]))
        if nr in (0, 19, 17):                                # read, readv, pread64
            f = self.files.get(a[0])
            if f is None:
                return -EBADF
            if nr == 17:
                f.seek(signed[3])
            vecs = [(a[1], a[2])] if nr in (0, 17) else self.iovecs(a[1], a[2])
            total = 0
            for base, n in vecs:
                data = f.read(n)
                mem.write(base, data)
                total += len(data)
                if len(data) < n:
                    break
            return total
        if nr in (2, 257):                                   # open, openat
            path = mem.cstring(a[1] if nr == 257 else a[0])
            flags, mode = (a[2], a[3]) if nr == 257 else (a[1], a[2])
            # access mode, O_CREAT, O_EXCL, O_TRUNC, O_APPEND: Linux's values
            # on the guest and on this host alike.
            try:
                fd = os.open(path, flags & 0o3303, mode & 0o777)
            except OSError as e:
                return -(e.errno or ENOENT)
            f = os.fdopen(fd, ("rb", "wb", "r+b")[flags & 3], buffering=0)
            fd = self.next_fd
            self.next_fd += 1
            self.files[fd] = f
            return fd
        if nr in (72, 91):                                   # fcntl, fchmod
            return 0 if a[0] in self.files or a[0] < 3 else -EBADF
        if nr == 3:                                          # close
            f = self.files.pop(a[0], None)
            if f is not None:
                f.close()
            return 0 if f is not None or a[0] < 3 else -EBADF
        if nr == 8:                                          # lseek
            f = self.files.get(a[0])
            if f is None:
                return -ESPIPE if a[0] < 3 else -EBADF
            return f.seek(signed[1], a[2])
        if nr == 5 or (nr == 262 and a[3] & 0x1000 and mem.read(a[1], 1) == b"\0"):
            fd, buf = (a[0], a[1]) if nr == 5 else (a[0], a[2])     # fstat(fd) / fstatat(fd, "")
            if fd in (0, 1, 2):
                return self.stat(buf, 0o20620, 0)            # a character device
            f = self.files.get(fd)
            if f is None:
                return -EBADF
            s = os.fstat(f.fileno())
            return self.stat(buf, s.st_mode, s.st_size)
        if nr in (4, 6, 262):                                # stat, lstat, newfstatat(path)
            path = mem.cstring(a[1] if nr == 262 else a[0])
            try:
                s = os.stat(path)
            except OSError as e:
                return -(e.errno or ENOENT)
            return self.stat(a[2] if nr == 262 else a[1], s.st_mode, s.st_size)
        if nr in (87, 263):                                  # unlink, unlinkat
            try:
                os.unlink(mem.cstring(a[1] if nr == 263 else a[0]))
            except OSError as e:
                return -(e.errno or ENOENT)
            return 0
        if nr in (82, 264, 316):                             # rename, renameat, renameat2
            old, new = (a[0], a[1]) if nr == 82 else (a[1], a[3])
            try:
                os.rename(mem.cstring(old), mem.cstring(new))
            except OSError as e:
                return -(e.errno or ENOENT)
            return 0
        if nr in (74, 75):                                   # fsync, fdatasync
            f = self.files.get(a[0])
            if f is None:
                return -EBADF
            f.flush()
            return 0
        if nr == 77:                                         # ftruncate
            f = self.files.get(a[0])
            if f is None:
                return -EBADF
            f.truncate(a[1])
            return 0
        if nr == 12:                                         # brk
            if self.brk_start <= a[0] <= self.brk_start + BRK_SIZE:
                if a[0] < self.brk:
                    mem.zero(a[0], self.brk - a[0])
                self.brk = a[0]
            return self.brk
        if nr == 9:                                          # mmap
            length = (a[1] + PAGE - 1) & ~(PAGE - 1)
            if length == 0 or self.mmap_next + length > MMAP_BASE + MMAP_SIZE:
                return -ENOMEM
            addr = self.mmap_next
            self.mmap_next += length + PAGE                  # a guard page between maps
            mem.zero(addr, length)
            if not a[3] & 0x20:                              # not MAP_ANONYMOUS: a copy of the file
                f = self.files.get(a[4])
                if f is None:
                    return -EBADF
                f.seek(a[5])
                mem.write(addr, f.read(a[1]))
            return addr
        if nr == 11:                                         # munmap
            mem.zero(a[0], a[1])
            return 0
        if nr == 25:                                         # mremap: musl copies instead
            return -ENOMEM
        if nr == 158:                                        # arch_prctl
            return -EINVAL if a[0] != 0x1002 else ("fs", a[1])  # ARCH_SET_FS
        if nr == 218:                                        # set_tid_address
            return 1
        if nr == 228:                                        # clock_gettime
            t = time.clock_gettime(time.CLOCK_MONOTONIC if a[0] == 1 else time.CLOCK_REALTIME)
            mem.write(a[1], struct.pack("<qq", int(t), int((t % 1) * 1e9)))
            return 0
        if nr == 204:                                        # sched_getaffinity: CPU 0
            if a[1] < 8:
                return -EINVAL
            mem.write(a[2], struct.pack("<Q", 1))
            return 8
        if nr == 16:                                         # ioctl: no terminal
            return -ENOTTY
        if nr in (13, 14, 15, 28, 202, 273):                 # signals, madvise, futex, robust list
            return 0
        if nr in (39, 186):                                  # getpid, gettid
            return 1
        if nr != 56:                                         # clone: no threads, quietly
            sys.stderr.write(f"x86emu: system call {nr} not emulated (ENOSYS)\n")
        return -ENOSYS


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", default="sapphire_rapids", choices=sorted(CPU_MODELS))
    ap.add_argument("--shim", default=os.environ.get("EMU_SHIM"),
                    help="tools/emu/bochs_shim.c built as a shared library")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="the program's environment (empty otherwise); repeatable")
    ap.add_argument("program")
    ap.add_argument("args", nargs=argparse.REMAINDER)
    opts = ap.parse_args()

    want = str(CPU_MODELS[opts.cpu])
    if os.environ.get("EMU_CPU_MODEL") != want:
        if not opts.shim or not os.path.exists(opts.shim):
            ap.error("--shim (or EMU_SHIM): the shared library built from tools/emu/bochs_shim.c")
        env = dict(os.environ, EMU_CPU_MODEL=want, EMU_SHIM=os.path.abspath(opts.shim),
                   LD_PRELOAD=os.path.abspath(opts.shim))
        os.execve(sys.executable, [sys.executable, *sys.argv], env)

    import bochscpu
    import bochscpu.cpu
    import bochscpu.memory

    mem = Memory(bochscpu.memory)
    sess = bochscpu.Session()
    sess.missing_page_handler = mem.missing
    mem.stop = sess.stop
    # The page tables: one PML4 entry, 512 PDPT entries of 1 GiB pages
    # (present, writable, user, page size).
    mem.allow(PAGE_TABLES, PAGE_TABLES + 2 * PAGE)
    mem.allow(SYSCALL_ENTRY, SYSCALL_ENTRY + PAGE)
    mem.write(PAGE_TABLES, struct.pack("<Q", (PAGE_TABLES + PAGE) | 0x7))
    mem.write(PAGE_TABLES + PAGE, b"".join(struct.pack("<Q", (i << 30) | 0x87) for i in range(512)))
    mem.write(SYSCALL_ENTRY, b"\xf4")                       # hlt
    linux = Linux(mem, opts.program, [opts.program, *opts.args], opts.env)

    st = bochscpu.State()
    bochscpu.cpu.set_long_mode(st)                          # PE, PG, PAE, LME / LMA, SCE, NXE
    cr4 = bochscpu.cpu.ControlRegister(st.cr4)
    cr4.OSFXSR = True
    cr4.OSXMMEXCPT = True
    cr4.OSXSAVE = True
    st.cr4 = int(cr4)
    st.xcr0 = 0xE7                     # x87, SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM
    st.cr3 = PAGE_TABLES
    st.lstar = SYSCALL_ENTRY
    st.star = 0x08 << 32               # syscall keeps CS 0x08 / SS 0x10
    st.sfmask = 0
    st.mxcsr = 0x1F80
    st.fpcw = 0x37F
    st.fptw = 0xFFFF                   # every x87 register empty
    code = bochscpu.Segment()
    code.present = True
    code.selector = 0x08
    code.base = 0
    code.limit = 0xFFFFFFFF
    code.attr = 0x209B                 # 64-bit code
    data = bochscpu.Segment()
    data.present = True
    data.selector = 0x10
    data.base = 0
    data.limit = 0xFFFFFFFF
    data.attr = 0xC093
    st.cs = code
    st.ds = st.es = st.ss = st.fs = st.gs = data
    st.rsp = linux.sp
    st.rip = linux.entry
    st.rflags = 0x202
    sess.cpu.state = st

    why: list[str] = []

    def on_hlt(s, _cpu):
        why.append("hlt")
        s.stop()

    def on_exception(s, _cpu, vector, error):
        why.append(f"exception {vector} (error code {error})")
        s.stop()

    hook = bochscpu.Hook()
    hook.hlt = on_hlt
    hook.exception = on_exception
    while True:
        why.clear()
        sess.run([hook])
        st = sess.cpu.state
        if mem.outside:
            sys.stderr.write(f"x86emu: a touch outside the program's memory at {mem.outside[0]:#x} "
                             f"(rip {st.rip:#x})\n")
            return 139
        if why != ["hlt"] or st.rip != SYSCALL_ENTRY + 1:
            sys.stderr.write(f"x86emu: stopped by {why or 'nothing'} at rip {st.rip:#x}\n")
            return 70
        args = [st.rdi, st.rsi, st.rdx, st.r10, st.r8, st.r9]
        try:
            ret = linux.call(st.rax, args)
        except Fault as e:                                  # as Linux's EFAULT, but loud
            sys.stderr.write(f"x86emu: system call {st.rax}: {e}\n")
            return 70
        except OSError as e:                                 # e.g. reading a write-only file
            ret = -(e.errno or EBADF)
        if linux.status is not None:
            return linux.status
        if isinstance(ret, tuple):                           # arch_prctl(ARCH_SET_FS)
            fs = st.fs
            fs.base = ret[1]
            st.fs = fs
            ret = 0
        st.rax = ret & 0xFFFF_FFFF_FFFF_FFFF
        st.rip = st.rcx                                      # back after the syscall,
        st.rflags = st.r11                                   # as sysret would
        sess.cpu.state = st


if __name__ == "__main__":
    try:
        status = main()
    except SystemExit as e:              # a usage or file error (argparse's are printed)
        if isinstance(e.code, str):
            sys.stderr.write(e.code + "\n")
        status = e.code if isinstance(e.code, int) else 2
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)        # not through the interpreter's exit: the wheel's objects crash it
