"""privstage: guarded privacy stages for Spark pipelines."""
from privstage.__about__ import __version__
__all__ = ["__version__"]
