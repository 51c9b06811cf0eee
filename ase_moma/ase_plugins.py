"""Declares ase-moma's calculator to ASE's experimental plugin system (ASE ≥ 3.29).

ASE imports this module through the ``ase.plugins`` entry point; ase-moma itself
never imports it, so ``import ase_moma`` touches no private ASE module.
"""

from ase._4.plugins.plugin import CalculatorPlugin

__ase_plugins__ = {
    CalculatorPlugin(
        name="ase-moma",
        citation="ase-moma: modular machine-learned interatomic potentials for ASE",
        implementation="ase_moma.calculators.MomaCalculator",
    ),
}
