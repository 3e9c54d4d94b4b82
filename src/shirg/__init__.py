"""shirg: static, text-conditioned high-resolution token selection for LaViDa."""

__version__ = "0.1.0"
