#!/usr/bin/env python3
"""Extract the Python API names of a TensorRT bindings wheel (stdlib only).

Usage: trt_api_names.py WHEEL [WHEEL ...] [-o OUTDIR] [--signatures] [--no-introspect] [--compact]

Writes OUTDIR/tensorrt-<version>[-<arch>].json (OUTDIR defaults to this script's dir). --compact
keeps what tests/test_trt_api_names.py reads (the class -> member map and the module's names);
tests/data/tensorrt_api/ was made with

  pip download --no-deps --only-binary=:all: --python-version 3.11 --platform manylinux_2_17_x86_64 \
      tensorrt-cu12-bindings==10.3.0 tensorrt-cu12-bindings==10.16.1.11 tensorrt-cu13-bindings==11.4.0.106 ...
  python scripts/trt_api_names.py *.whl --compact -o tests/data/tensorrt_api

Two methods, the first that works is recorded in "method":

 1. "introspection" (preferred, exact): the wheel's tensorrt.so is only linked
    against libnvinfer/libnvinfer_plugin/libnvonnxparser for a handful of
    factory functions (createInferRuntime_INTERNAL, getPluginRegistry, ...).
    We compile tiny stub libraries with those SONAMEs that export every
    undefined non-libc/non-Python symbol as `void* f(void){return 0;}`, put
    them on LD_LIBRARY_PATH and import the module in a child Python. Module
    init only registers pybind11 types, so the import succeeds and dir() of
    each class gives the exact member set (methods, properties, enum values,
    nested classes). Nothing that calls into TensorRT is executed.
    Needs: gcc/cc, a host whose arch matches the wheel, and a python3.X
    matching the wheel's cpXY tag (sys.executable or python3.X on PATH).
    The package is introspected twice: the raw .so ("raw") and after the
    wheel's __init__.py ran (final, what `import tensorrt` shows; __init__
    adds e.g. Logger.ERROR, DataType.itemsize, nptype, volume, __version__).

 2. "strings" (fallback, e.g. aarch64 wheel on an x86 host): pybind11 builds
    signatures at runtime from type descriptors, so the .so contains NO
    "(self: tensorrt.tensorrt.X, ...)" strings; only bare names. "classes"
    then holds only names seen in ":ivar"/":class:" docstring markup and is
    NOT a reliable class->member tie; use "identifiers" (whole NUL-terminated
    identifier strings) for an existence check only.
"""
import ast
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

IDENT_RE = re.compile(rb"^[A-Za-z_][A-Za-z0-9_]{2,}$")
PRINTABLE_RE = re.compile(rb"[\x20-\x7e\t]{3,}")  # like strings -n 3, applied to .rodata only
NOISE_PREFIX = ("_Z", "GLIBC", "CXXABI", "GCC_", "_ITM_", "__cxa", "__gxx", "__gmon", "_GLOBAL_",
                "_Unwind", "Py", "_Py", "__libc", "__stack_chk", "__dso_handle", "_DYNAMIC",
                "_GLOBAL_OFFSET_TABLE_", "_init", "_fini", "__bss", "__data", "_edata", "_end")
LIBC_NOISE = {
    "malloc", "free", "calloc", "realloc", "memcpy", "memmove", "memset", "memcmp", "strlen", "strcmp",
    "strncmp", "strcpy", "strchr", "strrchr", "strstr", "abort", "fwrite", "fputs", "fputc", "fflush",
    "stderr", "stdout", "printf", "fprintf", "snprintf", "vsnprintf", "sprintf", "getenv", "dlopen",
    "dlsym", "dlclose", "dlerror", "pthread_once", "pthread_key_create", "pthread_getspecific",
    "pthread_setspecific", "pthread_mutex_lock", "pthread_mutex_unlock", "strtol", "strtoul",
    "__errno_location", "__assert_fail", "__tls_get_addr", "__memcpy_chk", "__sprintf_chk",
    "__snprintf_chk", "__vsnprintf_chk", "__fprintf_chk", "__printf_chk", "__strcpy_chk",
    "__memmove_chk", "__memset_chk", "__cxa_finalize", "__cxa_atexit",
    "libc", "libm", "libdl", "librt", "libpthread", "libgcc_s", "libstdc", "text", "data", "bss",
    "rodata", "dynsym", "dynstr", "symtab", "strtab", "shstrtab", "gnu", "hash", "init_array",
    "fini_array", "eh_frame", "eh_frame_hdr", "gcc_except_table", "comment", "note", "plt", "got",
}

CHILD = r'''
import importlib.util, inspect, json, sys, types
mode, pkgdir, soname = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, pkgdir)
if mode == "raw":
    spec = importlib.util.spec_from_file_location("tensorrt", soname)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
else:
    import importlib
    mod = importlib.import_module(soname)
GENERIC = set(dir(object)) | {"__dict__", "__module__", "__weakref__", "_pybind11_conduit_v1_"}
def noise(n):
    return n.startswith("__pybind11_module_local") or n == "_pybind11_conduit_v1_"
SKIP_MOD = {"__builtins__", "__cached__", "__file__", "__loader__", "__spec__", "__path__", "__doc__",
            "__name__", "__package__"}
out = {"classes": {}, "module_functions": [], "module_attributes": {}, "signatures": {}}
def first_sig(obj, name):
    import re
    d = getattr(obj, "__doc__", None) or ""
    sigs = [re.sub(r"^\d+\.\s+", "", l.strip()) for l in d.splitlines()]
    return [l for l in sigs if l.startswith(name + "(") and l != name + "(*args, **kwargs)"]
def walk(qual, cls, depth=0):
    if qual in out["classes"] or depth > 3:
        return
    names = []
    for n in dir(cls):
        if noise(n):
            continue
        if n.startswith("__") and (n in GENERIC and n not in cls.__dict__ or n in ("__doc__", "__module__")):
            continue
        names.append(n)
    out["classes"][qual] = sorted(names)
    for n in names:
        try:
            v = getattr(cls, n)
        except Exception:
            continue
        if isinstance(v, type) and v.__qualname__.endswith(n) and v is not cls and getattr(v, "__module__", "").startswith(("tensorrt", mod.__name__)):
            walk(qual + "." + n, v, depth + 1)
        elif callable(v) and not isinstance(v, type) and not n.startswith("__"):
            s = first_sig(v, n)
            if s:
                out["signatures"][qual + "." + n] = s
        elif isinstance(v, property):
            s = (v.fget.__doc__ or "").splitlines()[:1] if v.fget else []
            out["signatures"][qual + "." + n] = ["<property>" + (" " + s[0] if s and s[0].startswith("(") else "") + (" rw" if v.fset else " ro")]
for n in sorted(dir(mod)):
    if n in SKIP_MOD:
        continue
    v = getattr(mod, n)
    if isinstance(v, type):
        if v.__name__ == n or True:
            walk(n, v)
    elif isinstance(v, types.ModuleType):
        out["module_attributes"][n] = "module"
    elif callable(v):
        out["module_functions"].append(n)
        s = first_sig(v, n)
        if s: out["signatures"][n] = s
    else:
        out["module_attributes"][n] = type(v).__module__ + "." + type(v).__qualname__ + (
            "=" + repr(v) if isinstance(v, (str, int, float)) else "")
print("@@JSON@@" + json.dumps(out))
'''


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def run(cmd, **kw):
    return subprocess.run(cmd, check=False, capture_output=True, text=True, **kw)


def rodata(blob):
    """Bytes of the ELF .rodata section (where pybind11 name literals live); whole file if not ELF64."""
    import struct
    if blob[:4] != b"\x7fELF" or blob[4] != 2:
        return blob
    end = "<" if blob[5] == 1 else ">"
    shoff, = struct.unpack_from(end + "Q", blob, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", blob, 0x3A)
    secs = [struct.unpack_from(end + "IIQQQQIIQQ", blob, shoff + i * shentsize) for i in range(shnum)]
    stro = secs[shstrndx][4]
    out = b""
    for sh in secs:
        nm = blob[stro + sh[0]: blob.index(b"\0", stro + sh[0])]
        if nm == b".rodata":
            out += blob[sh[4]: sh[4] + sh[5]]
    return out or blob


def strings_identifiers(blob):
    idents = set()
    for m in PRINTABLE_RE.finditer(rodata(blob)):
        s = m.group(0)
        if IDENT_RE.match(s):
            t = s.decode()
            if t.startswith(NOISE_PREFIX) or t in LIBC_NOISE:
                continue
            if re.match(r"^(GLIBC|CXXABI|GCC)_", t) or t.startswith(".") :
                continue
            idents.add(t)
    return idents


def doc_ties(blob):
    """Weak class ties from docstring markup (fallback only)."""
    text = rodata(blob).decode("latin-1")
    ivars = sorted(set(re.findall(r":ivar ([A-Za-z_][A-Za-z0-9_]*):", text)))
    classrefs = sorted(set(re.findall(r":class:`([A-Za-z_][A-Za-z0-9_.]*)`", text)))
    funcrefs = sorted(set(re.findall(r":func:`([A-Za-z_][A-Za-z0-9_.]*)", text)))
    qual = sorted({x for x in classrefs + funcrefs if "." in x})
    return {"ivar_names": ivars, "class_refs": classrefs, "dotted_refs": qual}


def python_names(zf, pkg):
    res = {}
    for name in sorted(zf.namelist()):
        if not name.endswith(".py"):
            continue
        try:
            tree = ast.parse(zf.read(name).decode("utf-8", "replace"))
        except SyntaxError:
            continue
        names = set()

        def stmts(body):  # top-level statements, descending into if/try/with/for blocks
            for n in body:
                yield n
                if isinstance(n, (ast.If, ast.For, ast.While, ast.With, ast.Try)):
                    for fld in ("body", "orelse", "finalbody"):
                        yield from stmts(getattr(n, fld, []) or [])
                    for h in getattr(n, "handlers", []) or []:
                        yield from stmts(h.body)
        for node in stmts(tree.body):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                tgts = node.targets if isinstance(node, ast.Assign) else [node.target]
                stack = list(tgts)
                while stack:
                    sub = stack.pop()
                    if isinstance(sub, (ast.Tuple, ast.List)):
                        stack.extend(sub.elts)
                    elif isinstance(sub, ast.Name):
                        names.add(sub.id)
                    elif isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name):
                        names.add(sub.value.id + "." + sub.attr)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for a in node.names:
                    if a.name != "*":
                        names.add(a.asname or a.name.split(".")[0])
                if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
                    names.add("*from " + ("." * node.level) + (node.module or ""))
            elif isinstance(node, ast.Delete):
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        names.add("-del " + t.id)
        # setattr(Logger, attr, value) loops etc.
        for sub in ast.walk(tree):
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id == "setattr" \
                    and sub.args and isinstance(sub.args[0], ast.Name):
                names.add(sub.args[0].id + ".<setattr:" + ast.unparse(sub.args[1]) + ">")
        res[name] = sorted(names)
    return res


def introspect(zf, so_member, pkg, pytag, wheel_arch, keep_dir=None):
    """Return (result dict | None, note)."""
    host = platform.machine()
    if wheel_arch and wheel_arch != host:
        return None, f"wheel arch {wheel_arch} != host {host}"
    cc = shutil.which("gcc") or shutil.which("cc")
    nm = shutil.which("nm")
    readelf = shutil.which("readelf")
    if not (cc and nm and readelf):
        return None, "gcc/nm/readelf not found"
    py = None
    m = re.match(r"cp(\d)(\d+)", pytag or "")
    want = (int(m.group(1)), int(m.group(2))) if m else None
    if want is None or sys.version_info[:2] == want:
        py = sys.executable
    else:
        py = shutil.which(f"python{want[0]}.{want[1]}")
    if not py:
        return None, f"no python matching {pytag}"
    tmp = tempfile.mkdtemp(prefix="trtx_")
    try:
        zf.extractall(tmp)
        so = os.path.join(tmp, so_member)
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", run([readelf, "-d", so]).stdout)
        undef = [l.split()[-1] for l in run([nm, "-D", "--undefined-only", so]).stdout.splitlines()
                 if l.split() and l.split()[0] == "U"]
        undef = [s for s in undef if "@" not in s and not re.match(r"_?Py", s)]
        stubdir = os.path.join(tmp, "_stubs")
        os.makedirs(stubdir)
        with open(os.path.join(stubdir, "stub.c"), "w") as f:
            f.writelines(f"void* {s}(void){{return 0;}}\n" for s in undef)
        nvlibs = [n for n in needed if n.startswith("libnv")]
        for lib in nvlibs:
            r = run([cc, "-shared", "-fPIC", "-o", os.path.join(stubdir, lib), "-Wl,-soname," + lib,
                     os.path.join(stubdir, "stub.c")])
            if r.returncode:
                return None, "stub compile failed: " + r.stderr[-500:]
        env = dict(os.environ, LD_LIBRARY_PATH=stubdir + os.pathsep + os.environ.get("LD_LIBRARY_PATH", ""))
        out = {}
        for mode, arg in (("raw", so), ("final", pkg)):
            r = run([py, "-c", CHILD, mode, tmp, arg], env=env, cwd=tmp, timeout=300)
            if r.returncode or "@@JSON@@" not in r.stdout:
                return None, f"import ({mode}) failed: " + (r.stderr or r.stdout)[-800:]
            out[mode] = json.loads(r.stdout.split("@@JSON@@", 1)[1])
        return out, "stubbed " + ",".join(nvlibs) + " exporting " + ",".join(undef)
    finally:
        if keep_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)


def compact(result):
    """The names a call check needs: public members per class, and the module's own names."""
    classes = {c: sorted(m for m in members if not m.startswith("__")) for c, members in result["classes"].items()}
    module = sorted(set(result.get("module_functions", [])) | set(result.get("module_attributes", []))
                    | {c for c in classes if "." not in c})
    return {k: result[k] for k in ("version", "dist", "arch", "wheel", "method")} | {"classes": classes, "module": module}


def process(wheel, outdir, want_sigs=False, allow_introspect=True, small=False):
    base = os.path.basename(wheel)
    mw = re.match(r"(?P<dist>[^-]+)-(?P<ver>[^-]+)-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>.+)\.whl$", base)
    version = mw.group("ver")
    plat = mw.group("plat")
    arch = "aarch64" if "aarch64" in plat else ("x86_64" if "x86_64" in plat else plat)
    zf = zipfile.ZipFile(wheel)
    sos = [n for n in zf.namelist() if re.search(r"/tensorrt[^/]*\.so$", n)]
    so_member = sos[0]
    pkg = so_member.split("/")[0]
    blob = zf.read(so_member)
    idents = strings_identifiers(blob)
    result = {
        "version": version,
        "dist": mw.group("dist"),
        "arch": arch,
        "wheel": {"file": base, "sha256": sha256(wheel), "so": so_member,
                  "so_sha256": hashlib.sha256(blob).hexdigest()},
        "import_package": pkg,
    }
    intro, note = (None, "disabled")
    if allow_introspect:
        intro, note = introspect(zf, so_member, pkg, mw.group("py"), arch)
    if intro:
        fin, raw = intro["final"], intro["raw"]
        result["method"] = "introspection"
        result["method_note"] = note
        result["classes"] = fin["classes"]
        result["module_functions"] = sorted(fin["module_functions"])
        result["module_attributes"] = fin["module_attributes"]
        # what the python __init__ added on top of the raw pybind module
        added = {}
        for c, mem in fin["classes"].items():
            extra = sorted(set(mem) - set(raw["classes"].get(c, [])))
            if extra:
                added[c] = extra
        added_mod = sorted((set(fin["module_functions"]) | set(fin["module_attributes"]) | set(fin["classes"]))
                           - (set(raw["module_functions"]) | set(raw["module_attributes"]) | set(raw["classes"])))
        result["added_by_init_py"] = {"classes": added, "module": [m for m in added_mod if "." not in m]}
        # how many introspected names are visible as whole strings (validates the strings fallback).
        # Misses are mostly linker tail-merged strings ("ERROR" stored inside "INTERNAL_ERROR",
        # "Logger" inside "ILogger") and names shorter than 3 chars.
        allnames = {m for mem in raw["classes"].values() for m in mem if not m.startswith("__")} | \
                   {c.split(".")[-1] for c in raw["classes"]} | set(raw["module_functions"])
        missing = sorted(allnames - idents)
        nosuffix = sorted(n for n in missing if not any(i.endswith(n) for i in idents))
        result["strings_check"] = {"api_names": len(allnames), "not_whole_string": len(missing),
                                   "not_even_as_suffix": nosuffix}
        sigs = fin["signatures"]
    else:
        result["method"] = "strings"
        result["method_note"] = ("introspection unavailable: " + note +
                                 "; 'classes' is empty - no class->member tie is possible from strings "
                                 "(pybind11 builds signatures at runtime); use 'identifiers' and test a name "
                                 "as any(s.endswith(name) for s in identifiers) because the linker tail-merges "
                                 "strings (e.g. ERROR lives inside INTERNAL_ERROR).")
        result["classes"] = {}
        result["doc_markup"] = doc_ties(blob)
        sigs = None
    result["python_names"] = python_names(zf, pkg)
    result["identifiers"] = sorted(idents)
    tag = "" if arch == "x86_64" else "-" + arch
    os.makedirs(outdir, exist_ok=True)
    out = os.path.join(outdir, f"tensorrt-{version}{tag}.json")
    with open(out, "w") as f:
        if small:
            json.dump(compact(result), f, indent=0, sort_keys=True)
        else:
            json.dump(result, f, separators=(",", ":"), sort_keys=False)
        f.write("\n")
    if want_sigs and sigs:
        with open(os.path.join(outdir, f"tensorrt-{version}{tag}.signatures.json"), "w") as f:
            json.dump(sigs, f, indent=0, sort_keys=True)
    return out, result


def main(argv):
    outdir = os.path.dirname(os.path.abspath(__file__))
    wheels, sigs, intro, small = [], False, True, False
    it = iter(argv)
    for a in it:
        if a == "-o":
            outdir = next(it)
        elif a == "--signatures":
            sigs = True
        elif a == "--no-introspect":
            intro = False
        elif a == "--compact":
            small = True
        else:
            wheels.append(a)
    if not wheels:
        print(__doc__)
        return 2
    for w in wheels:
        out, r = process(w, outdir, sigs, intro, small)
        print(f"{out}: method={r['method']} classes={len(r['classes'])} identifiers={len(r['identifiers'])} "
              f"size={os.path.getsize(out)}"
              + (f" strings: not_whole={r['strings_check']['not_whole_string']} not_even_suffix="
                 f"{len(r['strings_check']['not_even_as_suffix'])} of {r['strings_check']['api_names']}"
                 if "strings_check" in r else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
