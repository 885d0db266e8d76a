# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Cython binding of the grulite C core (include/grulite.h).

The classes here own the C handles.  Shapes and dtypes are validated with
the GIL held; the math runs inside ``with nogil:``.  Friendly argument
handling (unbatched input, time-major layout, tuple states) lives in
``grulite._model``; this module checks every size again before it hands a
pointer to C, so no call from Python can make the core read out of bounds.
"""

cimport numpy as cnp
from libc.stdint cimport int32_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memset

import os
import numpy as np

from grulite._errors import GruliteError

cnp.import_array()

__all__ = ["CModel", "Stream", "Workspace", "load_path", "load_bytes", "serialize",
           "check_config", "version", "isa_supported", "isa_names", "default_isa",
           "FORMAT_VERSION", "ACTIVATIONS", "DTYPES", "LAYER_KINDS", "GRU_ACTIVATIONS",
           "MERGES"]

FORMAT_VERSION = GRULITE_FORMAT_VERSION

cdef dict _table(int table):
    """{name: code} of a C name table (GRULITE_NAMES_*), in the table's order."""
    cdef const char *name = NULL
    cdef int i = 0, code
    out = {}
    while True:
        code = grulite_name_at(table, i, &name)
        if code < 0:
            return out
        out[name.decode("ascii")] = code
        i += 1


ACTIVATIONS = _table(GRULITE_NAMES_ACTIVATION)
_ACT_NAMES = {v: k for k, v in ACTIVATIONS.items()}
DTYPES = _table(GRULITE_NAMES_DTYPE)
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
LAYER_KINDS = _table(GRULITE_NAMES_LAYER_KIND)
_KIND_NAMES = {v: k for k, v in LAYER_KINDS.items()}
GRU_ACTIVATIONS = _table(GRULITE_NAMES_GRU_ACTIVATION)
MERGES = _table(GRULITE_NAMES_MERGE)
_MERGE_NAMES = {v: k for k, v in MERGES.items()}
_GRU_ACT_NAMES = {v: k for k, v in GRU_ACTIVATIONS.items()}


cdef tuple _layer_activations(grulite_layer_info *li):
    """Per direction ((f, alpha, beta), (g, alpha, beta)), or None for
    sigmoid / tanh; and the clip, or None."""
    cdef int d
    acts = []
    f32 = lambda v: float(str(np.float32(v)))      # the stored float32's shortest decimal
    for d in range(li.num_directions):
        acts.append(((_GRU_ACT_NAMES.get(li.activation_f[d], "?"), f32(li.alpha_f[d]),
                      f32(li.beta_f[d])),
                     (_GRU_ACT_NAMES.get(li.activation_g[d], "?"), f32(li.alpha_g[d]),
                      f32(li.beta_g[d]))))
    default = all(a[0][0] == "sigmoid" and a[1][0] == "tanh" for a in acts)
    return (None if default else tuple(acts)), (f32(li.clip) if li.clip > 0 else None)


def _isa_names():
    cdef int i = 0
    names = []
    while grulite_isa_name(i) != NULL:
        names.append(grulite_isa_name(i).decode("ascii"))
        i += 1
    return tuple(names)


cdef int dtype_code(object name) except -1:
    key = str(getattr(name, "__name__", name)) if name is not None else "float32"
    if key not in DTYPES:
        raise GruliteError(f"unknown weight dtype {name!r}; expected one of "
                           f"{', '.join(DTYPES)}")
    return DTYPES[key]

MAX_LAYERS = GRULITE_MAX_LAYERS
MAX_DENSE = GRULITE_MAX_DENSE
MAX_FEATURES = GRULITE_MAX_FEATURES
MAX_THREADS = GRULITE_MAX_THREADS
ISAS = _isa_names()          # every kernel set the library knows, plainest first


def isa_names():
    """Every kernel set the library knows, plainest first."""
    return ISAS


def default_isa():
    """The kernel set a model loaded now gets (GRULITE_ISA, else the best
    this CPU runs); None when GRULITE_ISA names one this CPU cannot run."""
    cdef const char *name = grulite_isa_default()
    return None if name == NULL else name.decode("ascii")


def isa_supported(name):
    """Whether this CPU and build can run the named kernel set."""
    cdef bytes b = str(name).encode("ascii", "replace")
    if b"\0" in b:
        return False
    return bool(grulite_isa_supported(b))


def version():
    """Version string of the C core."""
    return grulite_version().decode("ascii")


cdef int check(int rc, str context=None, const char *detail=NULL) except -1:
    """Maps a C return code to a Python exception; returns 0 on success."""
    if rc >= 0:
        return 0
    text = grulite_strerror(rc).decode("utf-8", "replace")
    if detail != NULL and detail[0] != 0:
        text = detail.decode("utf-8", "replace")
    if context:
        text = f"{context}: {text}"
    if rc == GRULITE_E_NOMEM:
        raise MemoryError(text)
    if rc == GRULITE_E_IO:
        raise OSError(text)
    raise GruliteError(text)


cdef bytes _path_bytes(object path):
    """A file system path for C: refused if it holds a NUL byte (C would
    silently use the part before it)."""
    cdef bytes p = os.fsencode(path)
    if b"\0" in p:
        raise GruliteError(f"path {os.fsdecode(p)!r} contains a NUL byte")
    return p


cdef inline float *fptr(cnp.ndarray a):
    return <float *>cnp.PyArray_DATA(a)


MAX_INT32 = 0x7FFFFFFF                # batch, steps and batch_size are int32 in C


def as_array(object a, str name):
    """np.asarray(a), with a ragged nested sequence refused by a GruliteError
    (numpy raises a bare ValueError for it)."""
    try:
        return np.asarray(a)
    except ValueError as e:
        raise GruliteError(f"{name} is a ragged nested sequence (its rows differ in length) or "
                           f"otherwise not a rectangular array: {e}") from None


cdef cnp.ndarray as_float(object a, str name):
    """`a` as an array of a float dtype, not copied yet (validated to be numeric)."""
    cdef cnp.ndarray arr = as_array(a, name)
    if arr.dtype.kind != "f":
        raise GruliteError(f"{name} must be a float32 or float64 array; got dtype {arr.dtype}")
    return arr


cdef class Workspace:
    """Scratch memory for whole-sequence calls; one per thread."""
    cdef grulite_workspace *ptr
    cdef readonly int requested      # last set_threads value (0: the default)

    def __cinit__(self):
        self.ptr = grulite_workspace_new()
        if self.ptr == NULL:
            raise MemoryError("cannot allocate a grulite workspace")

    def __dealloc__(self):
        grulite_workspace_free(self.ptr)

    @property
    def nbytes(self):
        return grulite_workspace_bytes(self.ptr)

    @property
    def threads(self):
        return grulite_workspace_threads(self.ptr)

    def set_threads(self, int n):
        """Threads for calls with this workspace; 0 = the default."""
        check(grulite_workspace_set_threads(self.ptr, n))
        self.requested = n


cdef class CModel:
    """A loaded, validated, read-only model (a .grl image)."""
    cdef grulite_model *ptr
    cdef grulite_info info
    cdef readonly object path        # file the model is mapped from, or None

    def __cinit__(self):
        self.ptr = NULL
        self.path = None

    def __dealloc__(self):
        grulite_model_free(self.ptr)

    cdef _init(self):
        check(grulite_model_info(self.ptr, &self.info))

    @property
    def input_size(self):
        return self.info.input_size

    @property
    def output_size(self):
        return self.info.output_size

    @property
    def head_size(self):
        return self.info.head_size

    @property
    def state_size(self):
        return self.info.state_size

    @property
    def num_layers(self):
        return self.info.num_layers

    @property
    def batch_first(self):
        return bool(self.info.batch_first)

    @property
    def head_from_state(self):
        return bool(self.info.head_from_state)

    @property
    def isa(self):
        return grulite_model_isa(self.ptr).decode("ascii")

    def set_isa(self, name):
        cdef bytes b = b"auto" if name is None else str(name).encode("ascii", "replace")
        if b"\0" in b or not b:
            raise GruliteError(f"kernel set name {name!r} is not valid")
        cdef int rc = grulite_model_set_isa(self.ptr, b)
        if rc == GRULITE_E_UNSUPPORTED:
            supported = [i for i in ISAS if isa_supported(i)]
            raise GruliteError(f"kernel set {name!r} cannot run here; supported: "
                               f"{', '.join(supported)} (or None for the best)")
        check(rc)

    @property
    def checksum(self):
        return self.info.checksum

    @property
    def macs(self):
        """Multiply-adds per batch row and time step in the GRU layers
        (grulite_model_macs); twice this is the FLOP count."""
        return grulite_model_macs(self.ptr)

    @property
    def kinds(self):
        """The kind of each layer, in the model's order ("gru", ..., "dense", ...)."""
        cdef int i
        return [_KIND_NAMES[grulite_model_layer_kind(self.ptr, i)]
                for i in range(self.info.num_layers + self.info.num_dense +
                               (1 if self.info.vocab_size else 0))]

    @property
    def vocab_size(self):
        """Token ids the embedding takes (0: the input is float features)."""
        return self.info.vocab_size

    def embedding(self):
        """The embedding as a dict (vocab_size, width, dtype, folded), or None."""
        cdef grulite_embedding_info ei
        cdef grulite_layer_info li
        if not self.info.vocab_size:
            return None
        check(grulite_model_embedding(self.ptr, &ei))
        check(grulite_model_layer(self.ptr, 0, &li))
        return dict(vocab_size=ei.vocab_size, width=ei.width,
                    dtype=_DTYPE_NAMES.get(ei.dtype, "?"), folded=bool(li.projected))

    @property
    def nbytes(self):
        return self.info.image_size

    def layers(self):
        """Per-layer configuration as a list of dicts."""
        cdef grulite_layer_info li
        out = []
        for l in range(self.info.num_layers):
            check(grulite_model_layer(self.ptr, l, &li))
            acts, clip = _layer_activations(&li)
            out.append(dict(input_size=li.input_size, hidden_size=li.hidden_size,
                            num_directions=li.num_directions,
                            reset_after=bool(li.reset_after), bias=bool(li.has_bias),
                            dtype=_DTYPE_NAMES.get(li.dtype, "?"), reverse=bool(li.reverse),
                            projected=bool(li.projected), h0=bool(li.has_h0),
                            activations=acts, clip=clip,
                            merge=_MERGE_NAMES.get(li.merge, "?")))
        return out

    def head(self):
        """Head layers as a list of dicts (empty without a head)."""
        cdef grulite_dense_info di
        out = []
        for j in range(self.info.num_dense):
            check(grulite_model_dense(self.ptr, j, &di))
            out.append(dict(in_features=di.in_features, out_features=di.out_features,
                            activation=_ACT_NAMES.get(di.activation, "?"),
                            bias=bool(di.has_bias)))
        return out

    def metadata(self):
        """The metadata bytes stored in the file."""
        cdef size_t n = 0
        cdef const char *p = grulite_model_metadata(self.ptr, &n)
        return p[:n] if n else b""

    def convert(self, dtype):
        """The .grl image with the GRU weights stored as `dtype` (bytes)."""
        cdef int code = dtype_code(dtype)
        cdef size_t size = 0
        cdef int rc
        cdef void *buf
        check(grulite_model_convert(self.ptr, code, NULL, 0, &size), "cannot convert the model")
        out = bytearray(size)
        a = np.frombuffer(out, dtype=np.uint8)
        buf = cnp.PyArray_DATA(a)
        with nogil:
            rc = grulite_model_convert(self.ptr, code, buf, size, &size)
        check(rc, "cannot convert the model")
        return bytes(out)

    def image(self):
        """A copy of the whole .grl image."""
        cdef size_t n = 0
        cdef const char *p = <const char *>grulite_model_image(self.ptr, &n)
        return p[:n]

    def save(self, path):
        cdef bytes p = _path_bytes(path)
        cdef const char *cp = p
        cdef int rc
        with nogil:
            rc = grulite_model_save(self.ptr, cp)
        if rc == GRULITE_E_IO:
            raise OSError(f"cannot write {os.fsdecode(p)!r}")
        check(rc)

    def forward(self, Workspace ws not None, cnp.ndarray x not None, bint batch_first,
                object lengths, object h0, bint want_y, bint want_h_n,
                bint want_head, bint head_all_steps):
        """Runs whole sequences.

        x: float32 C-contiguous (B, T, I) or (T, B, I); lengths: int32 (B,)
        or None; h0: float32 (B * state_size,) or None, layer-major
        (layer, direction, batch, hidden).  Returns (y, h_n_flat, head),
        each None when not asked for.
        """
        cdef grulite_run run
        cdef cnp.ndarray y = None, hn = None, hd = None
        cdef Py_ssize_t B, T
        cdef int rc
        if self.info.vocab_size:
            if cnp.PyArray_NDIM(x) != 2 or cnp.PyArray_TYPE(x) != cnp.NPY_INT32 or \
                    not cnp.PyArray_IS_C_CONTIGUOUS(x):
                raise GruliteError("internal: tokens must be a C-contiguous int32 2-D array")
        elif cnp.PyArray_NDIM(x) != 3 or cnp.PyArray_TYPE(x) != cnp.NPY_FLOAT32 or \
                not cnp.PyArray_IS_C_CONTIGUOUS(x):
            raise GruliteError("internal: x must be a C-contiguous float32 3-D array")
        if batch_first:
            B, T = x.shape[0], x.shape[1]
        else:
            T, B = x.shape[0], x.shape[1]
        if not self.info.vocab_size and x.shape[2] != self.info.input_size:
            raise GruliteError(f"x has {x.shape[2]} features; the model expects input_size="
                               f"{self.info.input_size}")
        if B < 1 or T < 1:
            raise GruliteError(f"x needs at least one sequence and one step; got batch={B}, steps={T}")
        if B > MAX_INT32 or T > MAX_INT32:
            raise GruliteError(f"x has batch={B}, steps={T}; each must be at most 2**31 - 1")
        memset(&run, 0, sizeof(run))
        run.batch = <int32_t>B
        run.steps = <int32_t>T
        run.batch_first = batch_first
        run.head_all_steps = head_all_steps
        if self.info.vocab_size:
            run.tokens = <const int32_t *>cnp.PyArray_DATA(x)
        else:
            run.x = fptr(x)
        run.lengths = _lengths_ptr(lengths, B)
        run.h0 = _state_ptr(h0, B * self.info.state_size)
        cdef cnp.npy_intp dims[3]
        if want_y:
            dims[0] = x.shape[0]
            dims[1] = x.shape[1]
            dims[2] = self.info.output_size
            y = cnp.PyArray_EMPTY(3, dims, cnp.NPY_FLOAT32, 0)
            run.y = fptr(y)
        if want_h_n:
            dims[0] = B * self.info.state_size
            hn = cnp.PyArray_EMPTY(1, dims, cnp.NPY_FLOAT32, 0)
            run.h_n = fptr(hn)
        if want_head:
            if self.info.num_dense == 0:
                raise GruliteError("this model has no head")
            if head_all_steps:
                hd = np.empty((x.shape[0], x.shape[1], self.info.head_size), dtype=np.float32)
            else:
                hd = np.empty((B, self.info.head_size), dtype=np.float32)
            run.head = fptr(hd)
        with nogil:
            rc = grulite_forward(self.ptr, ws.ptr, &run)
        if rc == GRULITE_E_TOKEN:
            _bad_token(x, lengths, batch_first, self.info.vocab_size)
        check(rc)
        return y, hn, hd

    def generate(self, Workspace ws not None, cnp.ndarray prompt not None, object lengths,
                 object h0, int stop, int max_steps, bint sample, double temperature,
                 int top_k, double top_p, object seed):
        """grulite_generate.  prompt: int32 C-contiguous (B, T); lengths:
        int32 (B,) or None; h0: float32 (B * state_size,) or None.  Returns
        (tokens (B, max_steps) int32 with -1 past each count, counts (B,))."""
        cdef grulite_generation g
        cdef cnp.ndarray toks, counts, seeds_a = None
        cdef int rc
        if cnp.PyArray_NDIM(prompt) != 2 or cnp.PyArray_TYPE(prompt) != cnp.NPY_INT32 or \
                not cnp.PyArray_IS_C_CONTIGUOUS(prompt):
            raise GruliteError("internal: prompt must be a C-contiguous int32 2-D array")
        B, T = prompt.shape[0], prompt.shape[1]
        if B < 1 or T < 1 or B > MAX_INT32 or T > MAX_INT32 or not 0 <= max_steps:
            raise GruliteError(f"internal: prompt {B}x{T}, max_steps {max_steps}")
        memset(&g, 0, sizeof(g))
        g.batch = <int32_t>B
        g.steps = <int32_t>T
        g.prompt = <const int32_t *>cnp.PyArray_DATA(prompt)
        g.lengths = _lengths_ptr(lengths, B)
        g.h0 = _state_ptr(h0, B * self.info.state_size)
        g.stop = stop
        g.max_steps = max_steps
        g.sample = sample
        g.temperature = <float>temperature
        g.top_k = top_k
        g.top_p = <float>top_p
        if isinstance(seed, np.ndarray):
            seeds_a = np.ascontiguousarray(seed, dtype=np.uint64)
            if (<object>seeds_a).shape != (B,):
                raise GruliteError(f"internal: seeds must be ({B},)")
            g.seeds = <const uint64_t *>cnp.PyArray_DATA(seeds_a)
        else:
            g.seed = <uint64_t>(int(seed) & 0xFFFFFFFFFFFFFFFF)
        try:        # pages past what rows write are never touched
            toks = np.empty((B, max_steps), dtype=np.int32)
        except MemoryError:
            raise GruliteError(f"max_steps={max_steps} for {B} rows needs {B * max_steps * 4} "
                               "bytes for the tokens; ask for fewer steps") from None
        counts = np.empty(B, dtype=np.int32)
        g.tokens = <int32_t *>cnp.PyArray_DATA(toks)
        g.counts = <int32_t *>cnp.PyArray_DATA(counts)
        with nogil:
            rc = grulite_generate(self.ptr, ws.ptr, &g)
        if rc == GRULITE_E_TOKEN:
            _bad_token(prompt, lengths, True, self.info.vocab_size)
        check(rc)
        return toks, counts

    def forecast(self, Workspace ws not None, cnp.ndarray x not None, bint batch_first,
                 object lengths, object h0, int horizon, bint want_h_n):
        """grulite_forecast.  x as for forward; returns (out (B, horizon,
        head_size), h_n_flat or None)."""
        cdef grulite_run run
        cdef cnp.ndarray out, hn = None
        cdef int rc
        if cnp.PyArray_NDIM(x) != 3 or cnp.PyArray_TYPE(x) != cnp.NPY_FLOAT32 or \
                not cnp.PyArray_IS_C_CONTIGUOUS(x) or x.shape[2] != self.info.input_size:
            raise GruliteError("internal: x must be a C-contiguous float32 (B, T, I) array")
        B, T = (x.shape[0], x.shape[1]) if batch_first else (x.shape[1], x.shape[0])
        if B < 1 or T < 1 or B > MAX_INT32 or T > MAX_INT32 or horizon < 1:
            raise GruliteError(f"internal: x {B}x{T}, horizon {horizon}")
        memset(&run, 0, sizeof(run))
        run.batch = <int32_t>B
        run.steps = <int32_t>T
        run.batch_first = batch_first
        run.x = fptr(x)
        run.lengths = _lengths_ptr(lengths, B)
        run.h0 = _state_ptr(h0, B * self.info.state_size)
        out = np.empty((B, horizon, self.info.head_size), dtype=np.float32)
        if want_h_n:
            hn = np.empty(B * self.info.state_size, dtype=np.float32)
            run.h_n = fptr(hn)
        cdef float *op = fptr(out)
        with nogil:
            rc = grulite_forecast(self.ptr, ws.ptr, &run, horizon, op)
        check(rc)
        return out, hn


cdef const int32_t *_lengths_ptr(object lengths, Py_ssize_t B) except? NULL:
    """The data of `lengths` (None: NULL), checked: C-contiguous int32 (B,).
    The caller keeps the array alive."""
    if lengths is None:
        return NULL
    cdef cnp.ndarray a = lengths
    if a.dtype != np.int32 or a.ndim != 1 or a.shape[0] != B or not a.flags.c_contiguous:
        raise GruliteError("internal: lengths must be int32 of shape (B,)")
    return <const int32_t *>cnp.PyArray_DATA(a)


cdef const float *_state_ptr(object h0, Py_ssize_t n) except? NULL:
    """The data of a flat state `h0` (None: NULL), checked: C-contiguous
    float32 (n,).  The caller keeps the array alive."""
    if h0 is None:
        return NULL
    cdef cnp.ndarray a = h0
    if a.dtype != np.float32 or a.ndim != 1 or a.shape[0] != n or not a.flags.c_contiguous:
        raise GruliteError("internal: h0 must be float32 of shape (B*state_size,)")
    return fptr(a)


cdef int _bad_token(cnp.ndarray tokens, object lengths, bint batch_first, int vocab) except -1:
    """Raises a GruliteError naming the first token id C refused
    (GRULITE_E_TOKEN): the first one outside [0, vocab) within a length."""
    t = tokens if batch_first else tokens.T
    B, T = t.shape
    lens = np.full(B, T) if lengths is None else np.asarray(lengths)
    valid = np.arange(T)[None, :] < lens[:, None]
    bad = valid & ((t < 0) | (t >= vocab))
    if bad.any():
        b, s = np.argwhere(bad)[0]
        raise GruliteError(f"token id {int(t[b, s])} at row {int(b)}, step {int(s)} is outside "
                           f"the vocabulary [0, {vocab})")
    raise GruliteError(f"a token id is outside the vocabulary [0, {vocab})")


def load_path(path):
    """Maps and validates the .grl file at `path`."""
    cdef CModel m = CModel.__new__(CModel)
    cdef bytes p = _path_bytes(path)
    cdef const char *cp = p
    cdef char msg[256]
    cdef int rc
    with nogil:
        rc = grulite_model_load(cp, &m.ptr, msg, sizeof(msg))
    if rc == GRULITE_E_IO:
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such model file: {os.fsdecode(p)!r}")
        raise OSError(f"cannot read model file {os.fsdecode(p)!r}: {msg.decode('utf-8', 'replace')}")
    check(rc, f"{os.fsdecode(p)!r} is not a valid grulite model", msg)
    m.path = os.path.abspath(os.fsdecode(p))
    m._init()
    return m


def load_bytes(data):
    """Validates a .grl image held in a bytes-like object (copied)."""
    cdef CModel m = CModel.__new__(CModel)
    cdef const unsigned char[::1] view = memoryview(data).cast("B")
    cdef char msg[256]
    cdef int rc
    cdef const void *ptr = NULL
    cdef size_t n = view.shape[0]
    if n:
        ptr = &view[0]
    else:
        ptr = <const void *>b""
    with nogil:
        rc = grulite_model_load_buffer(ptr, n, GRULITE_LOAD_COPY, &m.ptr, msg, sizeof(msg))
    check(rc, "not a valid grulite model image", msg)
    m._init()
    return m


cdef class _Spec:
    """A grulite_model_spec built from the model description of
    :func:`serialize`; owns the C arrays and keeps the weight arrays it
    points at alive.  The configuration is filled first (what
    grulite_spec_check reads); attach_weights() adds the weights."""
    cdef grulite_model_spec spec
    cdef grulite_layer_spec *ls
    cdef grulite_dense_spec *ds
    cdef grulite_embedding_spec es
    cdef list keep
    cdef bytes metadata

    def __cinit__(self):
        self.ls = NULL
        self.ds = NULL

    def __dealloc__(self):
        free(self.ls)
        free(self.ds)

    def __init__(self, object input_size, list layers, list dense, bytes metadata=b"",
                 bint batch_first=True, object dtype="float32", bint head_from_state=False,
                 object embedding=None):
        cdef Py_ssize_t nl = len(layers), nd = len(dense)
        cdef int i, j
        # Counts beyond the format's are C's to refuse: allocate none of them.
        cdef Py_ssize_t nl_alloc = nl if 0 < nl <= GRULITE_MAX_LAYERS else 1
        cdef Py_ssize_t nd_alloc = nd if 0 < nd <= GRULITE_MAX_DENSE else 1
        self.keep = []
        self.metadata = metadata
        self.ls = <grulite_layer_spec *>calloc(nl_alloc, sizeof(grulite_layer_spec))
        self.ds = <grulite_dense_spec *>calloc(nd_alloc, sizeof(grulite_dense_spec))
        if self.ls == NULL or self.ds == NULL:
            raise MemoryError()
        memset(&self.spec, 0, sizeof(self.spec))
        self.spec.input_size = _int32(input_size, "input_size")
        self.spec.num_layers = <int32_t>min(nl, 0x7FFFFFFF)    # C refuses > 64 before reading
        self.spec.layers = self.ls
        self.spec.num_dense = <int32_t>min(nd, 0x7FFFFFFF)
        self.spec.dense = self.ds
        self.spec.dtype = dtype_code(dtype)
        self.spec.batch_first = batch_first
        self.spec.head_from_state = head_from_state
        self.spec.metadata = self.metadata
        self.spec.metadata_len = len(self.metadata)
        if embedding is not None:
            # embedding: dict with vocab_size and fold (None: auto, True, False).
            memset(&self.es, 0, sizeof(self.es))
            self.es.vocab_size = _int32(embedding["vocab_size"], "embedding: vocab_size")
            fold = embedding.get("fold")
            self.es.fold = (GRULITE_FOLD_AUTO if fold is None else
                            GRULITE_FOLD_ALWAYS if fold else GRULITE_FOLD_NEVER)
            self.spec.embedding = &self.es
        if nl > GRULITE_MAX_LAYERS or nd > GRULITE_MAX_DENSE:
            return
        for i, L in enumerate(layers):
            self.ls[i].hidden_size = _int32(L["hidden_size"], f"layer {i}: hidden_size")
            self.ls[i].num_directions = _int32(L["num_directions"], f"layer {i}: num_directions")
            self.ls[i].reset_after = 1 if L["reset_after"] else 0
            self.ls[i].reverse = 1 if L.get("reverse") else 0
            self.ls[i].has_bias = 1 if L["bias"] else 0
            self.ls[i].has_h0 = 1 if L.get("h0") is not None else 0
            # activations: per direction ((f, alpha, beta), (g, alpha, beta)) with
            # names of GRU_ACTIVATIONS (checked by the caller), or None.
            acts = L.get("activations")
            for d, pair in enumerate((acts or ())[:2]):
                (fn, fa, fb), (gn, ga, gb) = pair
                self.ls[i].activation_f[d] = GRU_ACTIVATIONS.get(fn, -1)
                self.ls[i].activation_g[d] = GRU_ACTIVATIONS.get(gn, -1)
                self.ls[i].alpha_f[d] = fa
                self.ls[i].beta_f[d] = fb
                self.ls[i].alpha_g[d] = ga
                self.ls[i].beta_g[d] = gb
            clip = L.get("clip")
            self.ls[i].clip = 0.0 if clip is None else clip
            # merge: a two-direction layer's "concat" (default), "sum", "mul" or "ave".
            self.ls[i].merge = MERGES.get(L.get("merge") or "concat", -1)
        for j, D in enumerate(dense):
            self.ds[j].out_features = _int32(D["out_features"], f"head layer {j}: out_features")
            act = D["activation"]
            self.ds[j].activation = ACTIVATIONS[act] if act in ACTIVATIONS else -1
            self.ds[j].has_bias = 0 if D["bias"] is None else 1

    cdef attach_weights(self, list layers, list dense, object embedding=None):
        """Points the spec at the weight arrays (after check(): the shapes
        follow from a valid configuration)."""
        cdef int i, j, d
        cdef cnp.ndarray a
        if embedding is not None:
            a = _checked(embedding["weight"], (embedding["vocab_size"], self.spec.input_size),
                         self.keep)
            self.es.weight = fptr(a)
        for i, L in enumerate(layers):
            H = L["hidden_size"]
            for d in range(L["num_directions"]):
                a = _checked(L["weight_ih"][d], (3 * H, L["input_size"]), self.keep)
                self.ls[i].weight_ih[d] = fptr(a)
                a = _checked(L["weight_hh"][d], (3 * H, H), self.keep)
                self.ls[i].weight_hh[d] = fptr(a)
                if L["bias"]:
                    a = _checked(L["bias_ih"][d], (3 * H,), self.keep)
                    self.ls[i].bias_ih[d] = fptr(a)
                    a = _checked(L["bias_hh"][d], (3 * H,), self.keep)
                    self.ls[i].bias_hh[d] = fptr(a)
                if L.get("h0") is not None:
                    a = _checked(L["h0"][d], (H,), self.keep)
                    self.ls[i].h0[d] = fptr(a)
        for j, D in enumerate(dense):
            a = _checked(D["weight"], (D["out_features"], D["in_features"]), self.keep)
            self.ds[j].weight = fptr(a)
            if D["bias"] is not None:
                a = _checked(D["bias"], (D["out_features"],), self.keep)
                self.ds[j].bias = fptr(a)

    cdef int check(self) except -1:
        cdef char msg[256]
        msg[0] = 0
        return check(grulite_spec_check(&self.spec, msg, sizeof(msg)), None, msg)


cdef int32_t _int32(object v, str name) except? -1:
    """An int32 size for C, whose own check (grulite_spec_check) then names
    the field and its limits."""
    n = int(v)
    if not -0x80000000 <= n <= 0x7FFFFFFF:
        raise GruliteError(f"{name} = {n} does not fit the C core's 32-bit sizes "
                           f"(at most {GRULITE_MAX_FEATURES} features)")
    return <int32_t>n


def check_config(input_size, layers, dense, embedding=None):
    """Checks a model description against the format and the C core's
    limits (grulite_spec_check) before any tensor is copied; raises a
    GruliteError naming the field.  layers / dense / embedding as for
    :func:`serialize`."""
    _Spec(input_size, layers, dense, embedding=embedding).check()


def serialize(object input_size, list layers, list dense, bytes metadata,
              bint batch_first=True, dtype="float32", bint head_from_state=False,
              object embedding=None):
    """Builds a .grl image (bytes).

    layers: list of dicts with input_size, hidden_size, num_directions,
    reset_after, bias, and per direction lists weight_ih, weight_hh,
    bias_ih, bias_hh of float32 C-contiguous arrays in PyTorch layout.
    dense: list of dicts with in_features, out_features, activation (name),
    weight, bias (or None).  embedding: None, or a dict with vocab_size,
    fold (None: when it pays, True, False) and weight, a float32 (V,
    input_size) array (the model then reads token ids).  The configuration
    is checked by C first.
    """
    cdef _Spec sp = _Spec(input_size, layers, dense, metadata, batch_first, dtype,
                          head_from_state, embedding)
    sp.check()
    sp.attach_weights(layers, dense, embedding)
    cdef size_t size = 0
    cdef int rc
    cdef cnp.ndarray a
    cdef void *buf = NULL
    check(grulite_model_serialize(&sp.spec, NULL, 0, &size), "cannot build the model")
    out = bytearray(size)
    a = np.frombuffer(out, dtype=np.uint8)
    buf = cnp.PyArray_DATA(a)
    with nogil:
        rc = grulite_model_serialize(&sp.spec, buf, size, &size)
    check(rc, "cannot build the model")
    return bytes(out)


cdef cnp.ndarray _checked(object arr, tuple shape, list keep):
    cdef cnp.ndarray a = arr
    if a.dtype != np.float32 or not a.flags.c_contiguous or (<object>a).shape != shape:
        raise GruliteError(f"internal: tensor of shape {(<object>a).shape} {a.dtype}, expected "
                           f"C-contiguous float32 {shape}")
    keep.append(a)
    return a


cdef class Stream:
    """Runs a unidirectional model one step (or one chunk) at a time.

    Made by ``Model.stream(batch_size)``.  ``step`` gives exactly the
    numbers of the whole-sequence call on the concatenated input.
    """
    cdef grulite_stream *ptr
    cdef readonly object model       # the grulite.Model, kept alive
    cdef CModel core
    cdef readonly int batch_size
    cdef int input_size, out_size, state_size, vocab_size
    cdef bint has_head
    cdef object _state_split         # callable: flat state -> user form
    cdef object _state_join          # callable: user form -> flat state
    cdef bint busy                   # a step is running (another thread must not enter)

    def __cinit__(self):
        self.ptr = NULL

    def __init__(self, model, CModel core not None, object batch_size,
                 state_split, state_join):
        cdef int rc
        if batch_size < 1:
            raise GruliteError(f"batch_size must be >= 1; got {batch_size}")
        if batch_size > MAX_INT32:
            raise GruliteError(f"batch_size must be at most 2**31 - 1; got {batch_size}")
        rc = grulite_stream_new(core.ptr, <int32_t>batch_size, &self.ptr)
        if rc == GRULITE_E_UNSUPPORTED:
            raise GruliteError("streaming needs a forward-only model; this one has a "
                               "bidirectional or reverse layer (a backward direction needs the "
                               "whole sequence)")
        check(rc)
        self.model = model
        self.core = core
        self.batch_size = batch_size
        self.input_size = core.info.input_size
        self.vocab_size = core.info.vocab_size
        self.has_head = core.info.num_dense > 0
        self.out_size = core.info.head_size if self.has_head else core.info.output_size
        self.state_size = core.info.state_size
        self._state_split = state_split
        self._state_join = state_join

    def __dealloc__(self):
        grulite_stream_free(self.ptr)

    def step(self, x, out=None, rows=None):
        """Advances the stream.

        x: (B, I) for one step, (B, T, I) for a chunk of T steps, or (I,)
        when batch_size is 1; float32 C-contiguous arrays are used as they
        are, anything else is converted.  For a model with an embedding, x
        holds token ids: (B,) for one step or (B, T).  Returns the top
        layer's output (or the head's, for a model with a head) for each
        step: (B, H), (B, T, H) or (H,) to match x.  With ``out`` (a
        C-contiguous float32 array of that shape) the result is written
        there and nothing is allocated.

        rows: step only these stream rows (distinct, in [0, batch_size));
        x then has len(rows) rows, row i for stream row rows[i], and the
        other rows keep their state.
        """
        cdef cnp.ndarray xa, res, rows_a = None
        cdef Py_ssize_t T, n
        cdef int nd, rc
        cdef grulite_step st
        cdef cnp.npy_intp dims[3]
        n = self.batch_size
        if rows is not None:
            rows_a = self._rows(rows)
            n = rows_a.shape[0]
        if self.vocab_size:
            xa = _token_array(x, "x", self.vocab_size)
            nd = cnp.PyArray_NDIM(xa)
            if nd == 1 and xa.shape[0] == n:
                T = 1
            elif nd == 2 and xa.shape[0] == n and xa.shape[1] >= 1:
                T = xa.shape[1]
            else:
                raise GruliteError(
                    f"step expects token ids of shape ({n},) for one step or ({n}, steps); "
                    f"got {(<object>xa).shape}")
            nd += 1                      # the result adds a feature axis
        else:
            ready = cnp.PyArray_Check(x) and \
                cnp.PyArray_TYPE(<cnp.ndarray>x) == cnp.NPY_FLOAT32 and \
                cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>x)          # contiguous, aligned, native order
            # Shapes are checked on x as given; the float32 copy (if any) comes after.
            xa = <cnp.ndarray>x if ready else as_float(x, "x")
            nd = cnp.PyArray_NDIM(xa)
            if nd == 1 and n == 1 and xa.shape[0] == self.input_size:
                T = 1
            elif nd == 2 and xa.shape[0] == n and xa.shape[1] == self.input_size:
                T = 1
            elif nd == 3 and xa.shape[0] == n and xa.shape[2] == self.input_size \
                    and xa.shape[1] >= 1:
                T = xa.shape[1]
            else:
                raise GruliteError(
                    f"step expects x of shape ({'len(rows)' if rows is not None else 'batch_size'}, "
                    f"input_size) = ({n}, {self.input_size}) or (rows, steps, input_size); "
                    f"got {(<object>xa).shape}")
            if not ready:
                xa = np.require(xa, np.float32, ["C", "A"])
        if T > MAX_INT32:
            raise GruliteError(f"x holds {T} steps; a chunk may hold at most 2**31 - 1")
        # The result has x's shape with the last axis replaced by out_size.
        if nd == 3:
            dims[0] = n
            dims[1] = T
            dims[2] = self.out_size
        elif nd == 2:
            dims[0] = n
            dims[1] = self.out_size
        else:
            dims[0] = self.out_size
        if out is None:
            res = cnp.PyArray_EMPTY(nd, dims, cnp.NPY_FLOAT32, 0)
        else:
            if not (cnp.PyArray_Check(out) and cnp.PyArray_TYPE(<cnp.ndarray>out) == cnp.NPY_FLOAT32
                    and cnp.PyArray_ISCARRAY(<cnp.ndarray>out)
                    and cnp.PyArray_NDIM(<cnp.ndarray>out) == nd
                    and all((<cnp.ndarray>out).shape[i] == dims[i] for i in range(nd))):
                raise GruliteError(f"out must be a writeable, aligned, C-contiguous float32 array "
                                   f"in native byte order, of shape "
                                   f"{tuple(dims[i] for i in range(nd))}")
            res = <cnp.ndarray>out
        memset(&st, 0, sizeof(st))
        st.steps = <int32_t>T
        if rows_a is not None:
            st.n = <int32_t>n
            st.rows = <const int32_t *>cnp.PyArray_DATA(rows_a)
        if self.vocab_size:
            st.tokens = <const int32_t *>cnp.PyArray_DATA(xa)
        else:
            st.x = fptr(xa)
        if self.has_head:
            st.head = fptr(res)
        else:
            st.y = fptr(res)
        self._enter()
        try:
            with nogil:
                rc = grulite_stream_run(self.ptr, &st)
        finally:
            self.busy = False
        if rc == GRULITE_E_TOKEN:
            _bad_token(xa.reshape(n, T), None, True, self.vocab_size)
        check(rc)
        return res

    cdef cnp.ndarray _rows(self, object rows):
        """rows as a C-contiguous int32 array, checked: 1-D, in range, distinct."""
        r = as_array(rows, "rows")
        if r.ndim != 1 or r.shape[0] < 1 or (r.dtype.kind not in "iu"):
            raise GruliteError(f"rows must be a non-empty 1-D sequence of integer stream rows; "
                               f"got shape {r.shape}, dtype {r.dtype}")
        if r.min() < 0 or r.max() >= self.batch_size:
            bad = int(r[(r < 0) | (r >= self.batch_size)][0])
            raise GruliteError(f"row {bad} is outside the stream's rows [0, {self.batch_size})")
        u, c = np.unique(r, return_counts=True)
        if (c > 1).any():
            raise GruliteError(f"row {int(u[c > 1][0])} is listed twice in rows")
        return np.ascontiguousarray(r, dtype=np.int32)

    cdef int _enter(self) except -1:
        # Checked and set with the GIL held: a second thread cannot slip in.
        if self.busy:
            raise GruliteError("this stream is in use by another thread; a stream belongs to one "
                               "thread at a time (make one stream per thread)")
        self.busy = True
        return 0

    def reset(self, rows=None):
        """Sets the state back to zeros: every row's, or the listed rows'."""
        cdef cnp.ndarray r = None
        cdef int rc
        if rows is not None:
            r = self._rows(rows)
        self._enter()
        try:
            if r is None:
                rc = grulite_stream_reset(self.ptr)
            else:
                rc = grulite_stream_reset_rows(self.ptr, <const int32_t *>cnp.PyArray_DATA(r),
                                               <int32_t>r.shape[0])
        finally:
            self.busy = False
        check(rc)

    def get_state(self, rows=None):
        """The hidden state of every row, or of the listed rows (as a batch
        of len(rows)), in the form of ``h0`` (a copy)."""
        cdef cnp.ndarray r = None, flat
        cdef Py_ssize_t n = self.batch_size
        cdef int rc
        if rows is not None:
            r = self._rows(rows)
            n = r.shape[0]
        flat = np.empty(n * self.state_size, dtype=np.float32)
        self._enter()
        try:
            rc = grulite_stream_get_rows(self.ptr, NULL if r is None else
                                         <const int32_t *>cnp.PyArray_DATA(r), <int32_t>n, fptr(flat))
        finally:
            self.busy = False
        check(rc)
        return self._state_split(flat, n)

    def set_state(self, value, rows=None):
        """Sets the state of every row, or of the listed rows (value: a
        batch of len(rows), in the form of ``h0``)."""
        cdef cnp.ndarray r = None, flat
        cdef Py_ssize_t n = self.batch_size
        cdef int rc
        if rows is not None:
            r = self._rows(rows)
            n = r.shape[0]
        flat = self._state_join(value, n)
        self._enter()
        try:
            rc = grulite_stream_set_rows(self.ptr, NULL if r is None else
                                         <const int32_t *>cnp.PyArray_DATA(r), <int32_t>n, fptr(flat))
        finally:
            self.busy = False
        check(rc)

    @property
    def nbytes(self):
        """Bytes this stream holds (state and scratch; the model is shared)."""
        return grulite_stream_bytes(self.ptr)

    @property
    def state(self):
        """The hidden state, in the form of ``h0`` (a copy)."""
        return self.get_state()

    @state.setter
    def state(self, value):
        self.set_state(value)


cdef cnp.ndarray _token_array(object x, str name, int vocab):
    """Token ids as a C-contiguous int32 array: any integer array whose
    values fit (range is checked by C, which names nothing; callers then
    say which id).  Floats, bools and other dtypes are refused."""
    a = as_array(x, name)
    if a.dtype.kind not in "iu":
        raise GruliteError(f"{name} must hold integer token ids (the model has an embedding of "
                           f"{vocab} tokens); got dtype {a.dtype}")
    if a.size and (a.min() < -0x80000000 or a.max() > 0x7FFFFFFF):
        bad = a.min() if a.min() < 0 else a.max()
        raise GruliteError(f"token id {int(bad)} is outside the vocabulary [0, {vocab})")
    return np.require(a, np.int32, ["C", "A"])


def token_array(x, name, vocab):
    return _token_array(x, name, vocab)
