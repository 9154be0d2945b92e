"""The K-path weight-sharing supernet."""

from neas.supernet.supernet import Supernet

__all__ = ["Supernet"]
