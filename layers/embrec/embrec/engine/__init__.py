"""The engine pieces: the item index (``index``: hnswlib plus metadata columns) and the text encoder
(``encoder``: ONNX Runtime plus tokenizers). They use the domain and the foundation modules, never AWS.
"""

__all__ = ["encoder", "index"]
