"""The K-path weight-sharing supernet."""

from neas.supernet.grad import scale_grad
from neas.supernet.supernet import Supernet

__all__ = ["Supernet", "scale_grad"]
