"""jaxopt_practices: the seven tuning practices of deep-learning optimization as JAX building blocks.

Each practice lives in its own module and is an ``optax.GradientTransformation``, an
``optax.Schedule`` or a Flax initializer:

1. ``schedules`` — learning-rate (and momentum) schedules;
2. ``plateau``, ``lr_finder`` — reduce-on-plateau and the LR range test;
3. ``initializers`` — PyTorch-parity initializers, LSUV, weight-norm init, ``init_report``;
4. ``momentum`` — SGD, heavy-ball and Nesterov momentum;
5. ``adaptive`` — Adagrad, RMSprop, Adam, AdamW, AMSGrad;
6. ``clipping`` — by value, by global norm, AGC, skipping non-finite steps;
7. ``regularization`` — decoupled weight decay, L2, gradient noise, EMA and SWA.

On top: ``recipe`` (one transform from one config), ``groups`` (PyTorch-style parameter
groups: masks and per-group multipliers from regexes over parameter paths), ``monitor`` (live
learning rate and gradient health), ``parallel`` and ``flat`` (pmap / sharding helpers, the
flat-buffer path), ``training`` (a linen ``TrainState`` that forwards ``value=`` and other
extra arguments to the optimizer).

Example:
  >>> from jaxopt_practices import adaptive, schedules
  >>> tx = adaptive.adamw(schedules.warmup(schedules.cosine_annealing(1e-3, t_max=900), 100), mask="auto")
"""

from jaxopt_practices import adaptive as adaptive
from jaxopt_practices import clipping as clipping
from jaxopt_practices import flat as flat
from jaxopt_practices import groups as groups
from jaxopt_practices import initializers as initializers
from jaxopt_practices import lr_finder as lr_finder
from jaxopt_practices import momentum as momentum
from jaxopt_practices import monitor as monitor
from jaxopt_practices import parallel as parallel
from jaxopt_practices import plateau as plateau
from jaxopt_practices import recipe as recipe
from jaxopt_practices import regularization as regularization
from jaxopt_practices import schedules as schedules
from jaxopt_practices import training as training
from jaxopt_practices._validate import Mask as Mask
from jaxopt_practices._validate import PracticeWarning as PracticeWarning

__version__ = "0.1.0"

__all__ = [
    "adaptive", "clipping", "flat", "groups", "initializers", "lr_finder", "momentum", "monitor", "parallel",
    "plateau", "recipe", "regularization", "schedules", "training", "Mask", "PracticeWarning", "__version__",
]
