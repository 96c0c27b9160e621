"""Contract cases for practice 2 (reduce_on_plateau)."""

from helpers import ContractCase
from jaxopt_practices import plateau

CASES = [
    # patience=0 and a rising loss: a reduction after the 2nd value, applied to the 3rd update.
    ContractCase("reduce_on_plateau", plateau.reduce_on_plateau,
                 dict(factor=0.5, patience=0, threshold=0.01, cooldown=1),
                 extra_args=lambda step: {"value": 1.0 + step},
                 pmap_kwargs={"axis_name": "i"}),
    ContractCase("reduce_on_plateau_max_abs_accumulate", plateau.reduce_on_plateau,
                 dict(factor=0.1, patience=0, threshold=0.1, threshold_mode="abs", mode="max",
                      min_scale=0.2, accumulation_size=2),
                 extra_args=lambda step: {"value": [0.5, 0.7, 0.2][step % 3]},
                 pmap_kwargs={"axis_name": "i"}),
]
