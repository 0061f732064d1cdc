"""The torch-free inspection runtime: ``Inspector.load(path).inspect(image) -> Verdict``.

Needs only numpy, OpenCV, Pillow and ONNX Runtime (``pip install flawscope[runtime]``).
"""

from flawscope.runtime.inspector import Inspector
from flawscope.runtime.session import available_providers

__all__ = ["Inspector", "available_providers"]
