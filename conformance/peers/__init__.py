"""Third-party LoRA kernels, loaded at run time when their package is installed."""


class PeerNotInstalledError(ImportError):
    """The peer's package is missing; the message names the pip extra that installs it."""
