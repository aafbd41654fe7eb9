"""A backend module that prints on import, through Python and through the file descriptor."""

import os

from lora_ref import ReferenceLoRABackend as Backend

print("hello from a backend's import")
os.write(1, b"and from C code\n")

__all__ = ["Backend"]
