"""A square real-space grid with spectral (FFT) derivatives.

All lengths are in bohr and all energies in Hartree (atomic units, ħ = mₑ = e = 1).
The grid has ``n × n`` points over a square box of side ``box``, centred on the origin:
``x_i = -box/2 + i h`` for ``i = 0 .. n-1`` with spacing ``h = box / n``. Array axis 0
is x and axis 1 is y (``indexing="ij"``).

Derivatives are spectral: a field is expanded in the plane waves of the periodic box, so
they are exact for band-limited fields and exponentially accurate for smooth fields that
vanish at the edges, which is what a confined 2D electron gas is. The Coulomb problem
is *not* periodic; :mod:`ednn.ks2d.hartree` handles it separately by zero padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.fft

from ednn.ks2d import _validation as check


@dataclass(frozen=True)
class Grid:
    """An ``n × n`` grid over a square box of side ``box`` bohr centred on the origin.

    Parameters
    ----------
    n : int
        Points per side (even, at least 8).
    box : float
        Side of the square box in bohr.

    Example
    -------
    >>> grid = Grid(64, 24.0)
    >>> grid.h, grid.coordinates()[0].shape
    (0.375, (64, 64))
    """

    n: int
    box: float

    def __post_init__(self) -> None:
        n = check.integer(self.n, "n", minimum=8)
        if n % 2:
            raise ValueError(f"`n` must be even (FFT grid). Received: n={n}")
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "box", check.positive(self.box, "box"))

    @property
    def shape(self) -> tuple[int, int]:
        """Array shape ``(n, n)`` of a field on this grid."""
        return (self.n, self.n)

    @property
    def h(self) -> float:
        """Grid spacing in bohr."""
        return self.box / self.n

    @property
    def area_element(self) -> float:
        """Area of one grid cell, ``h²`` in bohr²."""
        return self.h * self.h

    @cached_property
    def x(self) -> np.ndarray:
        """1D coordinates ``-box/2 + i h`` in bohr, shape ``(n,)``."""
        return -0.5 * self.box + self.h * np.arange(self.n)

    def coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the coordinate arrays ``(X, Y)`` in bohr, each of shape ``(n, n)``."""
        return np.meshgrid(self.x, self.x, indexing="ij")

    @cached_property
    def _k(self) -> tuple[np.ndarray, np.ndarray]:
        # Wave vectors (1/bohr) for rfft2 layout: full axis 0, half axis 1.
        kx = 2 * np.pi * scipy.fft.fftfreq(self.n, d=self.h)
        ky = 2 * np.pi * scipy.fft.rfftfreq(self.n, d=self.h)
        return kx[:, None], ky[None, :]

    @cached_property
    def k2(self) -> np.ndarray:
        """``|k|²`` in bohr⁻² on the ``rfft2`` half grid, shape ``(n, n // 2 + 1)``."""
        kx, ky = self._k
        return kx**2 + ky**2

    @cached_property
    def _k_odd(self) -> tuple[np.ndarray, np.ndarray]:
        # First derivatives drop the Nyquist mode, whose derivative is not real.
        kx, ky = (k.copy() for k in self._k)
        kx[self.n // 2, 0] = 0.0
        ky[0, -1] = 0.0
        return kx, ky

    def integrate(self, f: np.ndarray) -> np.ndarray | float:
        """Integrate ``f`` over the box (sum times ``h²``) along the last two axes."""
        return np.sum(f, axis=(-2, -1)) * self.area_element

    def fft(self, f: np.ndarray) -> np.ndarray:
        """Real-to-complex FFT over the last two axes."""
        return scipy.fft.rfft2(f, axes=(-2, -1))

    def ifft(self, f_k: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`fft` back to real fields of shape ``(..., n, n)``."""
        return scipy.fft.irfft2(f_k, s=self.shape, axes=(-2, -1))

    def laplacian(self, f: np.ndarray) -> np.ndarray:
        """Spectral Laplacian ``∇²f`` (bohr⁻² times the units of ``f``).

        Parameters
        ----------
        f : ndarray, shape (..., n, n)
            Real field(s); leading axes are a batch.

        Returns
        -------
        ndarray, shape (..., n, n)
        """
        return self.ifft(-self.k2 * self.fft(f))

    def gradient(self, f: np.ndarray) -> np.ndarray:
        """Spectral gradient ``(∂f/∂x, ∂f/∂y)`` of one field, shape ``(2, n, n)``."""
        kx, ky = self._k_odd
        f_k = self.fft(f)
        return np.stack([self.ifft(1j * kx * f_k), self.ifft(1j * ky * f_k)])

    def divergence(self, g: np.ndarray) -> np.ndarray:
        """Spectral divergence ``∂g_x/∂x + ∂g_y/∂y`` of a vector field ``(2, n, n)``."""
        kx, ky = self._k_odd
        return self.ifft(1j * kx * self.fft(g[0]) + 1j * ky * self.fft(g[1]))

    def kinetic(self, psi: np.ndarray) -> np.ndarray:
        """Apply the kinetic operator ``-½∇²`` (Hartree) to orbital(s) ``(..., n, n)``."""
        return self.ifft(0.5 * self.k2 * self.fft(psi))


def apply_symmetry(field: np.ndarray, element: int) -> np.ndarray:
    """Image of ``field`` under one of the 8 symmetries of the square grid (its point group).

    The grid points ``x_i = -box/2 + i h`` go onto each other under ``x → -x`` as
    ``i → -i mod n`` (the row ``i = 0`` at ``-box/2`` stays, being its own periodic image),
    and under ``x ↔ y`` as a transpose. The spectral kinetic energy and derivatives commute
    with both, so a Kohn–Sham solution maps onto the solution of the mapped potential with
    the same energies, up to the density on the edge row (the isolated Hartree kernel sees
    that row at ``-box/2`` on both sides; a density that vanishes at the edges makes it
    negligible). This is what makes the symmetries exact data augmentations.

    Parameters
    ----------
    field : ndarray, shape (..., n, n)
        Field(s) on the grid, axis -2 being x and axis -1 being y.
    element : int
        0 to 7; bit 0 mirrors x, bit 1 mirrors y, bit 2 swaps x and y (applied last).

    Returns
    -------
    ndarray, shape (..., n, n)
    """
    element = check.integer(element, "element", minimum=0)
    if element > 7:
        raise ValueError(f"`element` must be 0 to 7. Received: element={element}")
    field = np.asarray(field)
    if field.ndim < 2 or field.shape[-1] != field.shape[-2]:
        raise ValueError(f"expected a field of shape (..., n, n). Received: {field.shape}")
    for bit, axis in ((1, -2), (2, -1)):
        if element & bit:
            field = np.roll(np.flip(field, axis), 1, axis)
    if element & 4:
        field = np.swapaxes(field, -1, -2)
    return field
