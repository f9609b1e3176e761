"""Raw formats -> typed arrays and records (DICOM, transaction CSV, images/video); no model code."""
