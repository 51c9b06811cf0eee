"""The spin-aware head: moments and the exchange energy between them, on any backbone that exposes its
node features (``energy_terms``).

``head`` (:class:`~ase_moma.spin.head.SpinHead`), ``model`` (:class:`~ase_moma.spin.model.SpinBackbone`,
a backbone with the head attached), ``orders`` (ranking one geometry's spin orders), ``files`` (how a
trained head is saved and read back) and ``exchange_start`` (J's least-squares start, for training).
Loading a tuned potential with a head imports the first four and no training code.
"""
