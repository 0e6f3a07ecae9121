"""numpy constants in compiled graphs, `torch.compile(fullgraph=True)` included.

Keras' torch converter reads `ndarray.dtype`, which TorchDynamo cannot trace: every
`keras.ops.convert_to_tensor(numpy_array)` in a compiled function is a graph break. On torch the
array goes through `torch.as_tensor` (traced as a constant), then to Keras' device.
"""

import keras
from keras import ops


def constant(array, dtype):
    """`array` (numpy) as a tensor of `dtype` ("float32", "int32"...), same shape."""
    if keras.backend.backend() == "torch":
        import torch

        return ops.convert_to_tensor(torch.as_tensor(array, dtype=getattr(torch, dtype)))
    return ops.convert_to_tensor(array, dtype)


def traced_by_dynamo():
    """True while TorchDynamo traces the caller: numpy values are graph tensors then, and a
    Python branch on them breaks the graph."""
    if keras.backend.backend() != "torch":
        return False
    import torch

    return torch.compiler.is_compiling()
