"""Contract cases for practice 6 (gradient clipping)."""

import math

from helpers import ContractCase
from jaxopt_practices import adaptive, clipping

# Note: no axis_name for clip_by_global_norm under pmap here: the contract feeds identical
# (pmean-ed) gradients to every replica, while axis_name means *sharded* gradients. The
# sharded norm is tested separately in test_clipping.py.
CASES = [
    ContractCase("clip_by_value", clipping.clip_by_value, dict(max_abs=0.5)),
    ContractCase("clip_by_global_norm_l2", clipping.clip_by_global_norm, dict(max_norm=1.0)),
    ContractCase("clip_by_global_norm_inf", clipping.clip_by_global_norm, dict(max_norm=0.5, norm_type=math.inf)),
    ContractCase("clip_by_global_norm_l1", clipping.clip_by_global_norm, dict(max_norm=2.0, norm_type=1.0)),
    ContractCase("clip_by_global_norm_l3", clipping.clip_by_global_norm, dict(max_norm=1.0, norm_type=3.0)),
    ContractCase("adaptive_grad_clip", clipping.adaptive_grad_clip, dict(clipping=0.05, eps=1e-3)),
    ContractCase("skip_nonfinite_adam", clipping.skip_nonfinite,
                 dict(inner=adaptive.adam(learning_rate=1e-2), max_consecutive=3)),
    ContractCase("skip_nonfinite_unbounded", clipping.skip_nonfinite,
                 dict(inner=adaptive.adamw(learning_rate=1e-2, mask="auto")), inject=False),
]
