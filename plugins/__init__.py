"""Backbone plugins shipped with ase-moma, one module per model family.

Each is registered in the ``ase_moma.backbones`` entry-point group; importing
this package imports none of them (their model packages are heavy).
"""
