"""Synthetic data generators: CT phantoms as DICOM, transactions, textured parts with defects."""
