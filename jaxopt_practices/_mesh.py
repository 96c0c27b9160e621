"""Meshes and the two shardings every layout starts from: replicated and batch-sharded.

The public names are re-exported by :mod:`jaxopt_practices.parallel`; the argument checks
are shared with :mod:`jaxopt_practices._sharding`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = ["make_mesh", "replicated_sharding", "batch_sharding"]


def check_mesh(mesh: Any) -> Mesh:
  """Raises ``ValueError`` unless ``mesh`` is a ``jax.sharding.Mesh``; returns it."""
  if not isinstance(mesh, Mesh):
    raise ValueError(f"mesh must be a jax.sharding.Mesh (e.g. parallel.make_mesh(('data',))), got mesh = {mesh!r}.")
  return mesh


def check_mesh_axes(name: str, axes: Any, mesh: Mesh) -> None:
  """Raises ``ValueError`` unless ``axes`` is one axis name of ``mesh`` or a sequence of them."""
  names = (axes,) if isinstance(axes, str) else axes
  if not isinstance(names, (tuple, list)) or not names or any(a not in mesh.axis_names for a in names):
    raise ValueError(f"{name} must be an axis name of the mesh, one of {mesh.axis_names}, or a sequence of them; "
                     f"got {name} = {axes!r}.")


def check_devices(devices: Any) -> list:
  """``devices`` as a list; ``ValueError`` unless it is a non-empty sequence of ``jax.Device``."""
  try:
    found = list(devices)
  except TypeError:
    found = []
  if not found or not all(isinstance(d, jax.Device) for d in found):
    raise ValueError(f"devices must be a non-empty sequence of jax.Device (e.g. jax.devices()), got devices = "
                     f"{devices!r}.")
  return found


def make_mesh(axis_names: Sequence[str] = ("data",), shape: Sequence[int] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ``Mesh`` over ``devices`` (default: all devices of all processes).

  Args:
    axis_names: one name per mesh axis.
    shape: the mesh shape (default: all devices along the first axis, 1 along the others).
    devices: the devices, in order.

  Returns:
    A ``jax.sharding.Mesh`` of ``shape`` with ``axis_names``.

  Raises:
    ValueError: if ``axis_names`` is not a non-empty sequence of strings, ``devices`` is not
      a non-empty sequence of devices, or ``shape`` does not have one entry per axis name
      multiplying to the number of devices.

  Example:
    >>> import jax
    >>> from jaxopt_practices import parallel
    >>> mesh = parallel.make_mesh(("data",))
    >>> mesh.shape["data"] == jax.device_count()
    True
  """
  devices = check_devices(jax.devices() if devices is None else devices)
  names = (axis_names,) if isinstance(axis_names, str) else axis_names
  if not isinstance(names, (tuple, list)) or not names or not all(isinstance(a, str) for a in names):
    raise ValueError(f"axis_names must be a non-empty sequence of strings, got axis_names = {axis_names!r}.")
  axis_names = tuple(names)
  if shape is None:
    shape = (len(devices),) + (1,) * (len(axis_names) - 1)
  if not isinstance(shape, (tuple, list)) or any(isinstance(s, bool) or not isinstance(s, (int, np.integer))
                                                 for s in shape):
    raise ValueError(f"shape must be a sequence of ints, one per axis name, got shape = {shape!r}.")
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(axis_names) or int(np.prod(shape)) != len(devices):
    raise ValueError(f"shape must have one entry per axis name and multiply to the {len(devices)} "
                     f"devices, got shape = {shape} for axis_names = {axis_names}.")
  return Mesh(np.asarray(devices, dtype=object).reshape(shape), axis_names)


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """The fully replicated sharding on ``mesh`` (``PartitionSpec()``): every device holds the whole array.

  A sharding, as :func:`batch_sharding`; it copies nothing (``parallel.replicate`` copies a
  pytree onto the devices for ``pmap``).

  Args:
    mesh: the device mesh.

  Returns:
    ``NamedSharding(mesh, PartitionSpec())``.

  Raises:
    ValueError: if ``mesh`` is not a ``jax.sharding.Mesh``.

  Example:
    >>> from jaxopt_practices import parallel
    >>> print(parallel.replicated_sharding(parallel.make_mesh(("data",))).spec)
    P()
  """
  return NamedSharding(check_mesh(mesh), P())


def batch_sharding(mesh: Mesh, axis: str | Sequence[str] = "data") -> NamedSharding:
  """Shards the leading (batch) axis of every batch leaf along mesh ``axis``.

  Args:
    mesh: the device mesh.
    axis: the mesh axis (or axes) the batch dimension is split over.

  Returns:
    ``NamedSharding(mesh, PartitionSpec(axis))``.

  Raises:
    ValueError: if ``mesh`` is not a ``Mesh`` or ``axis`` names no axis of it.

  Example:
    >>> from jaxopt_practices import parallel
    >>> print(parallel.batch_sharding(parallel.make_mesh(("data",)), "data").spec)
    P('data',)
  """
  check_mesh_axes("axis", axis, check_mesh(mesh))
  return NamedSharding(mesh, P(axis))
