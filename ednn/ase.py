"""ASE calculator backed by an EDNN model.

Example
-------
>>> from ase.build import graphene
>>> from ednn.ase import EDNNCalculator
>>> sheet = graphene(vacuum=10.0) * (10, 10, 1)
>>> sheet.calc = EDNNCalculator()          # the shipped default model
>>> energy = sheet.get_potential_energy()   # eV

Only energies are offered (``energy`` and ``free_energy``, equal here): the rasterizer is
not differentiated, so forces and stresses are not implemented yet.
"""

from __future__ import annotations

import os

from ase.calculators.calculator import (
    Calculator,
    CalculatorSetupError,
    InputError,
    all_changes,
)


class EDNNCalculator(Calculator):
    """Energies in eV from an EDNN model, the same numbers as ``ednn energy``.

    Parameters
    ----------
    model : EDNN or path, optional
        A loaded model or a ``.keras`` file; the shipped default model when None.
    evaluation_options : dict, optional
        Speed settings passed to :func:`ednn.stream.evaluate_sheet` (as ``ednn energy``'s
        ``--precision``, ``--regions-per-band``, ``--batch-size``), e.g.
        ``{"precision": "mixed_bfloat16"}``.
    **kwargs
        Passed to :class:`ase.calculators.calculator.Calculator`.
    """

    implemented_properties = ("energy", "free_energy")

    def __init__(self, model=None, evaluation_options: dict | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        from ednn.predict import Predictor

        self.model = (
            self.load_model(model)
            if model is None or isinstance(model, str | os.PathLike)
            else model
        )
        try:
            self.predictor = Predictor(self.model, **(evaluation_options or {}))
        except (ValueError, TypeError) as err:
            raise CalculatorSetupError(f"unusable model: {err}") from err

    @classmethod
    def load_model(cls, path: str | os.PathLike | None = None):
        """Load a model file (the shipped default when None), as ASE setup errors."""
        from ednn.predict import load_model

        try:
            return load_model(path)
        except (OSError, ValueError, TypeError) as err:
            raise CalculatorSetupError(f"could not load the EDNN model: {err}") from err

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        unsupported = set(properties) - set(self.implemented_properties)
        if unsupported:
            raise InputError(
                f"EDNNCalculator computes only energy and free_energy; asked for {sorted(unsupported)}"
            )
        try:
            prediction = self.predictor.predict(self.atoms)
        except (ValueError, TypeError) as err:
            raise InputError(str(err)) from err
        self.results["energy"] = prediction.energy
        self.results["free_energy"] = prediction.energy
