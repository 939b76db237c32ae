"""Framework tensors to a backend's arrays and back through DLPack, without copies.

(On the host, PyTorch tensors go through ``Tensor.numpy()`` / ``torch.from_numpy``,
which share memory the same way: NumPy marks DLPack imports read-only.)

``to_backend(t, backend)`` views a PyTorch / TensorFlow / MXNet tensor (or a NumPy or
CuPy array) as an array of ``backend.xp`` sharing its memory: a CUDA tensor becomes a
CuPy array for a device backend, a CPU tensor a NumPy array for a host backend.
``from_backend(z, like)`` goes back: an array of the backend as a tensor of ``like``'s
framework, again sharing memory. A tensor on the wrong side (a CUDA tensor for a host
backend, a CPU tensor for a device one) is an error naming both: moving it would be a
copy, which the caller must ask for.

Nothing here imports a framework: a tensor's framework is found from its type's module
and taken from ``sys.modules`` (it is imported already, since one of its tensors exists).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from lshcore.core.backend import Backend, device_kind
from lshcore.errors import InputError

__all__ = ["framework_of", "to_backend", "from_backend", "aligned_for_tensorflow", "FRAMEWORKS"]

#: the tensor types recognized, by the top-level module of their type
FRAMEWORKS = ("numpy", "cupy", "torch", "tensorflow", "mxnet")


def framework_of(x: Any) -> str | None:
    """``"numpy"``, ``"cupy"``, ``"torch"``, ``"tensorflow"``, ``"mxnet"``, or None."""
    if isinstance(x, np.ndarray):
        return "numpy"
    root = type(x).__module__.split(".")[0]
    return root if root in FRAMEWORKS else None


def _module(name: str) -> Any:
    mod = sys.modules.get(name)
    if mod is None:  # a tensor of it exists, so it is imported; guard all the same
        raise InputError(f"{name} is not imported: cannot hand tensors to it")
    return mod


def to_backend(x: Any, backend: Backend, name: str = "x") -> Any:
    """``x`` as an array of ``backend.xp`` sharing its memory (DLPack; no copy).

    InputError when ``x`` is no array or tensor lshcore knows, or lives on the other
    side of the host/device line from ``backend`` (the message says which way to move it).
    """
    fw = framework_of(x)
    kind = device_kind(x)
    if fw is None or kind is None:
        raise InputError(
            f"{name}: expected a NumPy/CuPy array or a torch/TensorFlow/MXNet tensor on the "
            f"CPU or a CUDA device, got {type(x).__module__}.{type(x).__name__}"
        )
    want = "cuda" if backend.on_device else "cpu"
    if kind != want:
        raise InputError(
            f"{name}: a {fw} tensor on {kind.upper()} cannot be handed to backend "
            f"{backend.name!r} (it works on {want.upper()} arrays) without a copy; move the "
            f"tensor, or choose a {'device' if kind == 'cuda' else 'host'} backend"
        )
    xp = backend.xp
    if fw in ("numpy", "cupy") and type(x).__module__.split(".")[0] == xp.__name__:
        return x
    if fw == "torch" and not backend.on_device:
        # NumPy marks DLPack imports read-only (and torch then refuses them back): the
        # CPU hand-off is torch's own shared-memory view, as zero-copy as DLPack
        return x.detach().numpy()
    if fw == "torch":
        x = x.detach()  # a tensor that requires grad refuses __dlpack__
    elif fw in ("tensorflow", "mxnet") and not backend.on_device:
        # NumPy reads only __dlpack__ objects, not these frameworks' capsules: their own
        # host view (TensorFlow's .numpy() shares a CPU tensor's memory; MXNet's
        # .asnumpy() copies)
        return np.asarray(x.numpy() if fw == "tensorflow" else x.asnumpy())
    elif fw == "tensorflow":
        capsule = _module("tensorflow").experimental.dlpack.to_dlpack(x)
        return _from_capsule(xp, capsule, fw)
    elif fw == "mxnet":
        return _from_capsule(xp, x.to_dlpack_for_read(), fw)
    return xp.from_dlpack(x)


def _from_capsule(xp: Any, capsule: Any, fw: str) -> Any:
    """A legacy DLPack capsule of a ``fw`` tensor (TensorFlow, MXNet) as a CuPy array."""
    return xp.from_dlpack(capsule)  # CuPy takes a capsule as well as __dlpack__


#: TensorFlow takes a DLPack tensor whose data is aligned to this many bytes (Eigen's
#: widest alignment) and aborts the whole process on one that is not (a failed check,
#: not an exception)
TF_ALIGN_BYTES = 64


def _data_address(z: Any) -> int:
    iface = getattr(z, "__cuda_array_interface__", None) or z.__array_interface__
    return int(iface["data"][0])


def aligned_for_tensorflow(z: Any) -> Any:
    """``z`` (a NumPy or CuPy array) itself when its data is aligned to
    :data:`TF_ALIGN_BYTES`, else a copy of it on the same side (device or host) that
    is: CuPy's memory pool hands out 256-byte aligned blocks, but a view into one (or a
    NumPy array, aligned to 16) may start anywhere."""
    if _data_address(z) % TF_ALIGN_BYTES == 0:
        return z
    xp = sys.modules[type(z).__module__.split(".")[0]]
    buf = xp.empty(z.nbytes + TF_ALIGN_BYTES, dtype=xp.uint8)
    start = -_data_address(buf) % TF_ALIGN_BYTES
    out = buf[start : start + z.nbytes].view(z.dtype).reshape(z.shape)
    out[...] = z
    return out


def from_backend(z: Any, like: Any) -> Any:
    """The backend array ``z`` as a tensor of ``like``'s framework sharing its memory
    (DLPack; no copy): ``torch.from_dlpack``, ``tf.experimental.dlpack.from_dlpack``,
    ``mx.nd.from_dlpack``; NumPy/CuPy arrays come back as they are. TensorFlow gets an
    aligned copy of an array whose data is not aligned (:func:`aligned_for_tensorflow`)."""
    fw = framework_of(like)
    if fw in ("numpy", "cupy"):
        return z
    if fw == "torch":
        torch = _module("torch")
        if isinstance(z, np.ndarray):
            return torch.from_numpy(z)  # shares memory (see to_backend)
        return torch.from_dlpack(z)
    if fw == "tensorflow":
        z = aligned_for_tensorflow(z)
        return _module("tensorflow").experimental.dlpack.from_dlpack(z.__dlpack__())
    if fw == "mxnet":
        return _module("mxnet").nd.from_dlpack(z.__dlpack__())
    raise InputError(
        f"like: expected a NumPy/CuPy array or a torch/TensorFlow/MXNet tensor, got "
        f"{type(like).__module__}.{type(like).__name__}"
    )
