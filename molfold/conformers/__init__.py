"""Conformers: metrics (D-MAE, D-RMSE, C-RMSD) and prediction from SMILES."""
