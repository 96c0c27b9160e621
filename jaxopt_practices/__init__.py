"""jaxopt_practices: the seven tuning practices of deep-learning optimization as JAX building blocks.

Each practice lives in its own module (``schedules``, ``plateau``, ``lr_finder``,
``initializers``, ``momentum``, ``adaptive``, ``clipping``, ``regularization``) and is
an ``optax.GradientTransformation``, an ``optax.Schedule`` or a Flax initializer.
Import the modules you need::

    from jaxopt_practices import adaptive, momentum
    tx = adaptive.adamw(1e-3, weight_decay=1e-2, mask="auto")
"""

from jaxopt_practices import adaptive as adaptive
from jaxopt_practices import momentum as momentum
from jaxopt_practices._validate import PracticeWarning as PracticeWarning

__version__ = "0.1.0"

__all__ = ["adaptive", "momentum", "PracticeWarning", "__version__"]
